package cluster_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/redistest"
)

// After FLUSHALL the key that signs resume tokens is gone; a node notices
// and writes back the one it signs with, so that a node that starts
// afterwards signs and checks with the same key and every token stays
// good on every node (SPEC §8: resume works on any node).
func TestTokenKeyComesBackAfterFlush(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	a := openOn(t, srv, prefix)
	admin := srv.Client()
	srv.Do(admin, "FLUSHALL")
	chattest.Eventually(t, 10*time.Second, func() bool {
		msg := srv.Do(admin, "GET", prefix+":token_key")
		k, err := msg.AsBytes()
		return err == nil && bytes.Equal(k, a.TokenKey())
	}, "the token key back in Redis after FLUSHALL")
	b := openOn(t, srv, prefix)
	if !bytes.Equal(a.TokenKey(), b.TokenKey()) {
		t.Fatal("a node started after FLUSHALL signs with another key than the node that was running")
	}
}
