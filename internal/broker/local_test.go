package broker_test

import (
	"testing"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/sqlite"
)

func TestLocalMemory(t *testing.T) {
	brokertest.Run(t, 1, func(t *testing.T, hs []broker.Handler) ([]broker.Broker, store.Store) {
		st := store.NewMemory(store.Retention{})
		t.Cleanup(func() { st.Close() })
		return []broker.Broker{newLocal(st, hs[0])}, st
	})
}

func TestLocalSQLite(t *testing.T) {
	brokertest.Run(t, 1, func(t *testing.T, hs []broker.Handler) ([]broker.Broker, store.Store) {
		st, err := sqlite.Open(t.Context(), t.TempDir()+"/broker.db", sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return []broker.Broker{newLocal(st, hs[0])}, st
	})
}

// newLocal is a started Local on st, delivering to h.
func newLocal(st store.Store, h broker.Handler) *broker.Local {
	b := broker.NewLocal(st)
	b.Start(h)
	return b
}
