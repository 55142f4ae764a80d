package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/chattest"
	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

func openAged(t *testing.T, srv *redistest.Server, prefix string, age time.Duration) *cluster.Store {
	t.Helper()
	return mustOpen(t, cluster.Options{URL: srv.URL(), Prefix: prefix, Retention: store.Retention{MaxAge: age}})
}

func xlen(t *testing.T, srv *redistest.Server, key string) int64 {
	t.Helper()
	msg := srv.Do(srv.Client(), "XLEN", key)
	n, _ := msg.AsInt64()
	return n
}

// Retention by age (-retention-age) in Redis. Reads skip every message
// older than MaxAge, exactly, and say retention dropped it (FirstSeq), as
// the other stores do, without writing; a write trims the stream (XTRIM
// MINID) once its oldest message is a sixteenth of MaxAge past it.
func TestRetentionByAge(t *testing.T) {
	srv := sharedRedis(t)
	ctx := context.Background()
	t.Run("reads", func(t *testing.T) {
		prefix := redistest.Prefix(t)
		st := openAged(t, srv, prefix, 30*time.Minute)
		// 200 messages that turn old a second from now, then 100 new.
		start := time.Now()
		for i := range 300 {
			m := storetest.Msg("r", fmt.Sprint(i))
			if i < 200 {
				m.TS = start.Add(-30*time.Minute + time.Second).UTC().Truncate(time.Millisecond)
			}
			storetest.MustAppend(t, st, m, "")
		}
		var info store.RoomInfo
		var msgs []protocol.Message
		if !chattest.Poll(10*time.Second, func() bool {
			var err error
			info, msgs, err = st.Page(ctx, "r", store.Query{After: 0, Limit: 5})
			if err != nil {
				t.Fatal(err)
			}
			return len(msgs) > 0 && msgs[0].Seq == 201
		}) {
			t.Fatalf("page after 0: %+v, %v; want it to start at 201 once the first 200 are old", info, chattest.Seqs(msgs))
		}
		if info.LastSeq != 300 || info.FirstSeq != 201 || !info.Truncated(0) {
			t.Fatalf("page after 0: %+v; want lastSeq 300, firstSeq 201, truncated", info)
		}
		newest, err := st.Messages(ctx, "r", store.Query{Limit: 500, Newest: true})
		if err != nil || len(newest) != 100 || newest[0].Seq != 201 {
			t.Fatalf("newest page: %v, %v; want 201..300", chattest.Seqs(newest), err)
		}
		if n := xlen(t, srv, prefix+":{r}:s"); n != 300 {
			t.Fatalf("the stream holds %d entries, want 300: reads write nothing, and writes wait past the age", n)
		}
	})
	t.Run("writes", func(t *testing.T) {
		prefix := redistest.Prefix(t)
		st := openAged(t, srv, prefix, time.Second)
		for i := range 3 {
			storetest.MustAppend(t, st, storetest.Msg("r", fmt.Sprint(i)), "")
		}
		written := time.Now()
		time.Sleep(time.Until(written.Add(time.Second + time.Second/16 + 100*time.Millisecond))) // the age itself, not a wait for a condition
		storetest.MustAppend(t, st, storetest.Msg("r", "young"), "")
		if n := xlen(t, srv, prefix+":{r}:s"); n != 1 {
			t.Fatalf("the stream holds %d entries after a write, want the young one", n)
		}
		if info, _ := st.Room(ctx, "r"); info.FirstSeq != 4 || info.LastSeq != 4 {
			t.Fatalf("after trimming: %+v, want firstSeq 4, lastSeq 4", info)
		}
	})
}
