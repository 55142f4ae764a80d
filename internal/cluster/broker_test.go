package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/broker"
	"github.com/roomchat/roomchat/internal/broker/brokertest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
)

// nodes starts len(hs) brokers, each on a store of its own (its own Redis
// connections, as separate processes would have) with one key prefix.
func nodes(t *testing.T, srv *redistest.Server, hs []broker.Handler) ([]*cluster.Broker, []*cluster.Store) {
	t.Helper()
	return nodesWith(t, srv, redistest.Prefix(t), hs)
}

// nodesWith is nodes on the key prefix prefix, for a test that reads or
// changes the nodes' keys itself.
// opts change each store's options (a retention, say).
func nodesWith(t *testing.T, srv *redistest.Server, prefix string, hs []broker.Handler, opts ...func(*cluster.Options)) ([]*cluster.Broker, []*cluster.Store) {
	t.Helper()
	var bs []*cluster.Broker
	var sts []*cluster.Store
	for _, h := range hs {
		o := cluster.Options{URL: srv.URL(), Prefix: prefix, Timeout: time.Second}
		for _, f := range opts {
			f(&o)
		}
		st := mustOpen(t, o)
		bs = append(bs, startBroker(t, st, h, 200*time.Millisecond))
		sts = append(sts, st)
	}
	return bs, sts
}

// startBroker starts a broker on st that delivers to h and checks every
// room's position every check, and waits until it is ready. It is closed
// when the test ends, before st.
func startBroker(t *testing.T, st *cluster.Store, h broker.Handler, check time.Duration) *cluster.Broker {
	t.Helper()
	b := cluster.NewBroker(st, cluster.BrokerOptions{Check: check})
	b.Start(h)
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatalf("broker not ready: %v", err)
	}
	return b
}

func TestBrokerConformance(t *testing.T) {
	srv := sharedRedis(t)
	brokertest.Run(t, 3, func(t *testing.T, hs []broker.Handler) ([]broker.Broker, store.Store) {
		bs, sts := nodes(t, srv, hs)
		out := make([]broker.Broker, len(bs))
		for i, b := range bs {
			out[i] = b
		}
		return out, sts[0]
	})
}
