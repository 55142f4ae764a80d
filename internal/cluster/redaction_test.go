package cluster_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
	"github.com/roomchat/roomchat/internal/store/storetest"
)

// A redaction writes again only the entries from the target's stream
// node on (publish.lua): with stream-node-max-entries 10, removing the
// newest-but-one message of 200 adds a dozen entries, not 200. Whatever
// the node bound, the text of every redacted message leaves Redis (DUMP
// of every key), the other entries stay as they were, in order, and the
// room takes messages after it. With a bound of 0 (none, or not known)
// the whole stream is written again.
func TestRedactionWritesOnlyTheTail(t *testing.T) {
	for _, span := range []int{10, 0} {
		t.Run(fmt.Sprintf("stream-node-max-entries=%d", span), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{})
			c := srv.Client()
			srv.Do(c, "CONFIG", "SET", "stream-node-max-entries", fmt.Sprint(span))
			prefix := redistest.Prefix(t)
			st := openOn(t, srv, prefix)
			stream := prefix + ":{r}:s"

			secrets := map[int64]string{3: "secret-early", 120: "secret-middle", 199: "secret-late"}
			for seq := int64(1); seq <= 200; seq++ {
				text := fmt.Sprintf("keep-%03d", seq)
				if s, ok := secrets[seq]; ok {
					text = s
				}
				m := storetest.Msg("r", text)
				m.ID = fmt.Sprintf("m-%d", seq) // the tombstone keeps the ID
				storetest.MustAppend(t, st, m, "")
			}
			before := entries(t, srv, stream)

			srv.Do(c, "CONFIG", "RESETSTAT")
			storetest.MustAppend(t, st, storetest.Redaction("r", 199, protocol.User{UserID: "mod"}), "")
			adds := xadds(t, srv)
			if span > 0 && adds > int64(span)+2 {
				t.Errorf("redacting seq 199 of 200 added %d entries; want at most %d (the node's and the redaction)", adds, span+2)
			}
			if span == 0 && adds < 200 {
				t.Errorf("redacting with no node bound added %d entries; want the whole stream again", adds)
			}
			storetest.MustAppend(t, st, storetest.Redaction("r", 120, protocol.User{UserID: "mod"}), "")
			storetest.MustAppend(t, st, storetest.Redaction("r", 3, protocol.User{UserID: "mod"}), "")
			if r := storetest.MustAppend(t, st, storetest.Msg("r", "after"), ""); r.Msg.Seq != 204 {
				t.Fatalf("the message after three redactions took seq %d, want 204", r.Msg.Seq)
			}

			keysMsg := srv.Do(c, "KEYS", prefix+":*")
			keys, _ := keysMsg.AsStrSlice()
			for _, k := range keys {
				dumpMsg := srv.Do(c, "DUMP", k)
				dump, _ := dumpMsg.ToString()
				for _, s := range secrets {
					if strings.Contains(dump, s) {
						t.Errorf("key %s still holds %q", k, s)
					}
				}
			}
			var want []string
			for _, e := range before {
				if !strings.Contains(e, "secret-") {
					want = append(want, e)
				}
			}
			got := entries(t, srv, stream)
			if len(got) != len(want)+4 || !slices.Equal(got[:len(want)], want) {
				t.Fatalf("stream after the redactions: %d entries, want the %d kept unchanged and in order, then 4 new", len(got), len(want))
			}
		})
	}
}

// entries is the stream's entries as "ID body", in order.
func entries(t *testing.T, srv *redistest.Server, key string) []string {
	t.Helper()
	msg := srv.Do(srv.Client(), "XRANGE", key, "-", "+")
	arr, err := msg.ToArray()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		pair, _ := e.ToArray()
		id, _ := pair[0].ToString()
		fields, _ := pair[1].AsStrSlice()
		out = append(out, id+" "+strings.Join(fields, " "))
	}
	return out
}

// xadds is how many XADD calls Redis ran since its last CONFIG RESETSTAT.
func xadds(t *testing.T, srv *redistest.Server) int64 {
	t.Helper()
	msg := srv.Do(srv.Client(), "INFO", "commandstats")
	info, _ := msg.ToString()
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_xadd:calls="); ok {
			var n int64
			fmt.Sscan(strings.SplitN(rest, ",", 2)[0], &n)
			return n
		}
	}
	return 0
}
