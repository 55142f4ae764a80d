package server_test

import (
	"sync/atomic"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// panicStore is a real store that panics in Append on demand: the only
// fault it injects.
type panicStore struct {
	store.Store
	panicNext atomic.Bool
}

func (p *panicStore) Append(m protocol.Message, key string, done store.DoneFunc) {
	if p.panicNext.CompareAndSwap(true, false) {
		panic("injected fault")
	}
	p.Store.Append(m, key, done)
}
