package store_test

import (
	"testing"

	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T, ret store.Retention) store.Store { return store.NewMemory(ret) })
}

func TestMemoryModeration(t *testing.T) {
	storetest.RunModeration(t, func(t *testing.T) interface {
		store.Store
		store.Moderation
	} {
		return store.NewMemory(store.Retention{})
	})
}
