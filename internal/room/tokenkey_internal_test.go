package room

import (
	"bytes"
	"sync"
	"testing"

	"github.com/roomchat/roomchat/internal/store"
)

// keyStore is the in-memory store with a token key the test changes, as
// a cluster's store takes up the key another node put back in Redis.
type keyStore struct {
	*store.Memory
	mu  sync.Mutex
	key []byte
}

func (s *keyStore) TokenKey() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

func (s *keyStore) set(k []byte) {
	s.mu.Lock()
	s.key = k
	s.mu.Unlock()
}

// The registry signs and checks each token with the store's key of the
// moment, not the one it had when the registry started.
func TestTokensFollowTheStoresKey(t *testing.T) {
	first, second := bytes.Repeat([]byte("a"), 32), bytes.Repeat([]byte("b"), 32)
	st := &keyStore{Memory: store.NewMemory(store.Retention{}), key: first}
	reg := New(st, Options{})
	t.Cleanup(func() { reg.Close() })
	u, _, _ := reg.Connect(nopConn{}, "")
	if _, _, ok := (signer{key: first}).verify(u.Token()); !ok {
		t.Fatal("a token is not signed with the store's key")
	}
	st.set(second)
	v, _, _ := reg.Connect(nopConn{}, "")
	if _, _, ok := (signer{key: second}).verify(v.Token()); !ok {
		t.Fatal("after the store's key changed, a new token is not signed with the new key")
	}
	back, resumed, _ := reg.Connect(nopConn{}, v.Token())
	if !resumed || back.ID() != v.ID() {
		t.Fatal("a token signed with the store's new key does not resume")
	}
}

type nopConn struct{}

func (nopConn) Queue([]byte) {}
