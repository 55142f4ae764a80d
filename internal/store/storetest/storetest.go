// Package storetest is the conformance suite every store.Store must pass:
// memory, SQLite and any later one run the same tests through Run.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/store"
)

// Factory opens a fresh, empty store with the given retention. The suite
// closes it.
type Factory func(t *testing.T, ret store.Retention) store.Store

// Run runs the whole suite against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Run("SeqStartsAtOneAndGrowsByOne", func(t *testing.T) { testSeq(t, newStore) })
	t.Run("ConcurrentAppendsKeepOrder", func(t *testing.T) { testConcurrent(t, newStore) })
	t.Run("Messages", func(t *testing.T) { testMessages(t, newStore) })
	t.Run("Dedup", func(t *testing.T) { testDedup(t, newStore) })
	t.Run("RetentionCount", func(t *testing.T) { testRetention(t, newStore) })
	t.Run("RoomInfo", func(t *testing.T) { testRoomInfo(t, newStore) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, newStore) })
	t.Run("Page", func(t *testing.T) { testPage(t, newStore) })
	t.Run("EpochStable", func(t *testing.T) { testEpochStable(t, newStore) })
	t.Run("Flush", func(t *testing.T) { testFlush(t, newStore) })
	t.Run("TokenKey", func(t *testing.T) { testTokenKey(t, newStore) })
	t.Run("RoomRetention", func(t *testing.T) { testRoomRetention(t, newStore) })
	t.Run("RoomKeepsNothing", func(t *testing.T) { testRoomKeepsNothing(t, newStore) })
	t.Run("RoomRetentionAge", func(t *testing.T) { testRoomRetentionAge(t, newStore) })
	t.Run("Redaction", func(t *testing.T) { testRedaction(t, newStore) })
	t.Run("RedactionInPages", func(t *testing.T) { testRedactionInPages(t, newStore) })
	t.Run("Clear", func(t *testing.T) { testClear(t, newStore) })
}

// Msg returns a message ready to Append.
func Msg(room, text string) protocol.Message {
	return protocol.Message{
		ID:      fmt.Sprintf("id-%s-%s", room, text),
		RoomID:  room,
		From:    protocol.User{UserID: "u1", Name: "alice"},
		Message: text,
		TS:      time.Now().UTC().Truncate(time.Millisecond),
	}
}

// Result is the outcome of one Append.
type Result struct {
	Msg protocol.Message
	Dup bool
	Err error
}

// MustAppend appends m and waits for its outcome, failing the test on error.
func MustAppend(t testing.TB, s store.Store, m protocol.Message, key string) Result {
	t.Helper()
	r := Append(t, s, m, key)
	if r.Err != nil {
		t.Fatalf("Append(%q in %q): %v", m.Message, m.RoomID, r.Err)
	}
	return r
}

// Append appends m and waits (up to 10 s) for its outcome.
func Append(t testing.TB, s store.Store, m protocol.Message, key string) Result {
	t.Helper()
	ch := make(chan Result, 1)
	s.Append(m, key, func(stored protocol.Message, dup bool, err error) {
		ch <- Result{stored, dup, err}
	})
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("Append(%q) did not complete within 10s", m.Message)
		return Result{}
	}
}

func open(t *testing.T, f Factory, ret store.Retention) store.Store {
	t.Helper()
	s := f(t, ret)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func testSeq(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	for i := 1; i <= 5; i++ {
		for _, room := range []string{"a", "b"} {
			r := MustAppend(t, s, Msg(room, fmt.Sprint(i)), "")
			if r.Msg.Seq != int64(i) || r.Dup {
				t.Fatalf("room %s message %d: got seq=%d dup=%v, want seq=%d dup=false", room, i, r.Msg.Seq, r.Dup, i)
			}
		}
	}
}

// testConcurrent appends from many goroutines at once and checks that each
// room's done calls come in seq order with no gap, and that each goroutine's
// messages got increasing seqs.
func testConcurrent(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	const rooms, writers, each = 4, 8, 50
	var mu sync.Mutex
	doneOrder := map[string][]int64{}
	bySender := map[string][]int64{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var inner sync.WaitGroup
			for i := range each {
				room := fmt.Sprintf("r%d", (w+i)%rooms)
				m := Msg(room, fmt.Sprintf("w%d-%d", w, i))
				m.ID = fmt.Sprintf("w%d-%d", w, i)
				inner.Add(1)
				s.Append(m, "", func(stored protocol.Message, dup bool, err error) {
					defer inner.Done()
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					mu.Lock()
					doneOrder[room] = append(doneOrder[room], stored.Seq)
					bySender[fmt.Sprintf("w%d/%s", w, room)] = append(bySender[fmt.Sprintf("w%d/%s", w, room)], stored.Seq)
					mu.Unlock()
				})
			}
			inner.Wait()
		})
	}
	wg.Wait()
	total := 0
	for room, seqs := range doneOrder {
		total += len(seqs)
		for i, seq := range seqs {
			if seq != int64(i+1) {
				t.Fatalf("room %s: done call %d had seq %d, want %d (done calls out of seq order)", room, i, seq, i+1)
			}
		}
	}
	if total != writers*each {
		t.Fatalf("got %d done calls, want %d", total, writers*each)
	}
	for k, seqs := range bySender {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%s: seqs %v not increasing: one goroutine's appends reordered", k, seqs)
			}
		}
	}
}

func seqs(ms []protocol.Message) []int64 {
	out := []int64{}
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

func testMessages(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	var want []protocol.Message
	for i := 1; i <= 10; i++ {
		want = append(want, MustAppend(t, s, Msg("room", fmt.Sprintf("m%d", i)), "").Msg)
	}
	MustAppend(t, s, Msg("other", "x"), "")

	all, err := s.Messages(ctx, "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Fatalf("Messages(all) differs from what was appended (-want +got):\n%s", diff)
	}
	cases := []struct {
		name string
		q    store.Query
		want []int64
	}{
		{"after", store.Query{After: 7}, []int64{8, 9, 10}},
		{"after limit oldest", store.Query{After: 2, Limit: 3}, []int64{3, 4, 5}},
		{"newest limit", store.Query{Limit: 3, Newest: true}, []int64{8, 9, 10}},
		{"before newest", store.Query{Before: 5, Limit: 2, Newest: true}, []int64{3, 4}},
		{"between", store.Query{After: 3, Before: 6}, []int64{4, 5}},
		{"after last", store.Query{After: 10}, []int64{}},
		{"before first", store.Query{Before: 1}, []int64{}},
		// Bounds past any seq (SPEC §4: since is any whole number ≥ 0)
		// read what they select, never a failure.
		{"after 1e17", store.Query{After: 1e17}, []int64{}},
		{"after max", store.Query{After: math.MaxInt64, Limit: 5}, []int64{}},
		{"after max newest", store.Query{After: math.MaxInt64, Limit: 5, Newest: true}, []int64{}},
		{"before 1e17 newest", store.Query{Before: 1e17, Limit: 2, Newest: true}, []int64{9, 10}},
		{"before max", store.Query{After: 8, Before: math.MaxInt64}, []int64{9, 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Messages(ctx, "room", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, seqs(got)); diff != "" {
				t.Fatalf("Messages(%+v) seqs (-want +got):\n%s", tc.q, diff)
			}
		})
	}
	none, err := s.Messages(ctx, "never-used", store.Query{})
	if err != nil || len(none) != 0 {
		t.Fatalf("Messages(unknown room) = %v, %v; want none, nil", none, err)
	}
	info, page, err := s.Page(ctx, "room", store.Query{After: math.MaxInt64, Limit: 5})
	if err != nil || len(page) != 0 || info.LastSeq != 10 || store.More(info, page) {
		t.Fatalf("Page(after max) = %+v, %v, %v; want LastSeq 10, no messages, no more", info, seqs(page), err)
	}
}

func testDedup(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	first := MustAppend(t, s, Msg("room", "hello"), store.DedupKey("u1", "room", "c1"))
	again := MustAppend(t, s, Msg("room", "hello again"), store.DedupKey("u1", "room", "c1"))
	if !again.Dup || again.Msg.Seq != first.Msg.Seq || again.Msg.ID != first.Msg.ID {
		t.Fatalf("retry with same key: got %+v dup=%v, want original seq %d dup=true", again.Msg, again.Dup, first.Msg.Seq)
	}
	other := MustAppend(t, s, Msg("room", "from u2"), store.DedupKey("u2", "room", "c1"))
	if other.Dup || other.Msg.Seq != 2 {
		t.Fatalf("same client id from another user: got seq=%d dup=%v, want seq=2 dup=false", other.Msg.Seq, other.Dup)
	}
	all, err := s.Messages(context.Background(), "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("stored %d messages, want 2 (the retry must store nothing)", len(all))
	}
	// The same client id from the same user in another room is another
	// request (SPEC §4).
	elsewhere := MustAppend(t, s, Msg("room-b", "hello"), store.DedupKey("u1", "room-b", "c1"))
	if elsewhere.Dup || elsewhere.Msg.Seq != 1 || elsewhere.Msg.RoomID != "room-b" {
		t.Fatalf("same id in another room: got %+v dup=%v, want a new message with seq 1 in room-b", elsewhere.Msg, elsewhere.Dup)
	}
	// Retries sent back to back, before the first is durable, still store one message.
	var wg sync.WaitGroup
	results := make(chan Result, 5)
	for range 5 {
		wg.Add(1)
		s.Append(Msg("burst", "same"), store.DedupKey("u3", "burst", "k"), func(m protocol.Message, dup bool, err error) {
			results <- Result{m, dup, err}
			wg.Done()
		})
	}
	wg.Wait()
	close(results)
	stored := 0
	for r := range results {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if !r.Dup {
			stored++
		}
		if r.Msg.Seq != 1 {
			t.Fatalf("burst retry got seq %d, want 1", r.Msg.Seq)
		}
	}
	if stored != 1 {
		t.Fatalf("5 sends with one key stored %d messages, want 1", stored)
	}
}

func testRetention(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{MaxMessages: 5})
	for i := 1; i <= 12; i++ {
		MustAppend(t, s, Msg("room", fmt.Sprint(i)), "")
	}
	ctx := context.Background()
	// Retention may run in the background: wait for it, boundedly.
	deadline := time.Now().Add(10 * time.Second)
	var got []protocol.Message
	for {
		var err error
		got, err = s.Messages(ctx, "room", store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) <= 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if diff := cmp.Diff([]int64{8, 9, 10, 11, 12}, seqs(got)); diff != "" {
		t.Fatalf("after 12 messages with MaxMessages=5 (-want +got):\n%s", diff)
	}
	ri, err := s.Room(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if ri.LastSeq != 12 || ri.FirstSeq != 8 {
		t.Fatalf("Room = %+v, want LastSeq 12, FirstSeq 8", ri)
	}
	if !ri.Truncated(3) || ri.Truncated(7) || ri.Truncated(12) {
		t.Fatalf("Truncated: since 3 → %v (want true), 7 → %v, 12 → %v (want false)", ri.Truncated(3), ri.Truncated(7), ri.Truncated(12))
	}
	// The next seq continues after trimming.
	if r := MustAppend(t, s, Msg("room", "13"), ""); r.Msg.Seq != 13 {
		t.Fatalf("seq after trimming = %d, want 13", r.Msg.Seq)
	}
}

func testRoomInfo(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	ri, err := s.Room(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if ri.LastSeq != 0 || ri.Truncated(0) {
		t.Fatalf("Room(unused) = %+v, want LastSeq 0 and nothing truncated", ri)
	}
	MustAppend(t, s, Msg("r", "1"), "")
	MustAppend(t, s, Msg("r", "2"), "")
	ri, err = s.Room(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if ri.LastSeq != 2 || ri.FirstSeq != 1 || ri.Epoch == "" {
		t.Fatalf("Room = %+v, want LastSeq 2, FirstSeq 1, an epoch", ri)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func testClosed(t *testing.T, f Factory) {
	s := f(t, store.Retention{})
	MustAppend(t, s, Msg("r", "1"), "")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := Append(t, s, Msg("r", "2"), "")
	if !errors.Is(r.Err, store.ErrUnavailable) {
		t.Fatalf("Append after Close: err = %v, want ErrUnavailable", r.Err)
	}
	if err := s.Ready(context.Background()); err == nil {
		t.Fatal("Ready after Close = nil, want an error")
	}
}

func testPage(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	for i := 1; i <= 30; i++ {
		MustAppend(t, s, Msg("room", fmt.Sprint(i)), "")
	}
	info, page, err := s.Page(ctx, "room", store.Query{After: 10, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{11, 12, 13, 14, 15}, seqs(page)); diff != "" {
		t.Fatalf("Page(after 10, limit 5) (-want +got):\n%s", diff)
	}
	if info.LastSeq != 30 || info.Epoch == "" || !store.More(info, page) {
		t.Fatalf("Page info = %+v, More = %v; want LastSeq 30, an epoch, more", info, store.More(info, page))
	}
	info, page, err = s.Page(ctx, "room", store.Query{After: 25})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 5 || store.More(info, page) {
		t.Fatalf("Page(after 25) = %v, More = %v; want 26..30, no more", seqs(page), store.More(info, page))
	}
	info, page, err = s.Page(ctx, "unknown", store.Query{Limit: 5, Newest: true})
	if err != nil || len(page) != 0 || info.LastSeq != 0 || info.Epoch == "" {
		t.Fatalf("Page(unknown room) = %+v, %v, %v; want no messages, LastSeq 0, an epoch", info, page, err)
	}

	// Pages read while appends go on agree with their info: never a
	// message past LastSeq, and the newest page ends at LastSeq.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			MustAppend(t, s, Msg("busy", fmt.Sprint(i)), "")
		}
	})
	for range 200 {
		info, page, err := s.Page(ctx, "busy", store.Query{Limit: 3, Newest: true})
		if err != nil {
			t.Error(err)
			break
		}
		if len(page) > 0 && page[len(page)-1].Seq != info.LastSeq {
			t.Errorf("newest page ends at %d, info.LastSeq = %d: not one snapshot", page[len(page)-1].Seq, info.LastSeq)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func testEpochStable(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	before, err := s.Room(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if before.Epoch == "" {
		t.Fatal("a room without messages has an empty epoch; want the epoch its first message will have")
	}
	MustAppend(t, s, Msg("fresh", "first"), "")
	after, err := s.Room(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch != before.Epoch {
		t.Fatalf("epoch changed with the first message: %q → %q", before.Epoch, after.Epoch)
	}
}

func testFlush(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	var done atomic.Int64
	for i := range 500 {
		s.Append(Msg("flush", fmt.Sprint(i)), "", func(protocol.Message, bool, error) { done.Add(1) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n := done.Load(); n != 500 {
		t.Fatalf("after Flush, %d of 500 Appends had called done", n)
	}
}

func testTokenKey(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	k := s.TokenKey()
	if len(k) < 32 {
		t.Fatalf("TokenKey is %d bytes, want at least 32", len(k))
	}
	if !bytes.Equal(k, s.TokenKey()) {
		t.Fatal("TokenKey changed between two calls")
	}
	other := open(t, f, store.Retention{})
	if bytes.Equal(k, other.TokenKey()) {
		t.Fatal("two stores have the same TokenKey")
	}
}

// Rules is a store.Retention.Room whose answers a test changes while the
// store runs, as a reload does. Rooms it does not name keep def.
type Rules struct {
	mu    sync.Mutex
	rooms map[string]Rule
	def   Rule
}

// Rule is one room's retention.
type Rule struct {
	Max int
	Age time.Duration
}

// NewRules returns rules with default def.
func NewRules(def Rule) *Rules { return &Rules{rooms: map[string]Rule{}, def: def} }

// Set changes room's rule.
func (r *Rules) Set(room string, rule Rule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rooms[room] = rule
}

// Room is the store.Retention.Room func.
func (r *Rules) Room(room string) (int, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rule, ok := r.rooms[room]
	if !ok {
		rule = r.def
	}
	return rule.Max, rule.Age
}

// eventually polls f (retention may run in the background) for up to 10 s
// until it returns "", then fails with its last answer.
func eventually(t *testing.T, f func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testRoomRetention(t *testing.T, f Factory) {
	rules := NewRules(Rule{Max: 10000})
	rules.Set("three", Rule{Max: 3})
	// MaxMessages is ignored once Room is set.
	s := open(t, f, store.Retention{MaxMessages: 1, Room: rules.Room})
	ctx := context.Background()
	for i := 1; i <= 6; i++ {
		MustAppend(t, s, Msg("three", fmt.Sprint(i)), "")
		MustAppend(t, s, Msg("default", fmt.Sprint(i)), "")
	}
	check := func(room string, wantSeqs []int64, wantFirst int64) {
		t.Helper()
		eventually(t, func() string {
			info, page, err := s.Page(ctx, room, store.Query{})
			if err != nil {
				return err.Error()
			}
			if !cmp.Equal(wantSeqs, seqs(page)) || info.FirstSeq != wantFirst || info.LastSeq != 6 {
				return fmt.Sprintf("room %s: page %v, info %+v; want %v, FirstSeq %d, LastSeq 6", room, seqs(page), info, wantSeqs, wantFirst)
			}
			return ""
		})
	}
	check("three", []int64{4, 5, 6}, 4)
	check("default", []int64{1, 2, 3, 4, 5, 6}, 1)
	// A reload lowers the room's size: reads apply it at once.
	rules.Set("three", Rule{Max: 2})
	check("three", []int64{5, 6}, 5)
	rules.Set("default", Rule{Max: 4})
	check("default", []int64{3, 4, 5, 6}, 3)
	if r := MustAppend(t, s, Msg("three", "7"), ""); r.Msg.Seq != 7 {
		t.Fatalf("seq after a lowered size = %d, want 7", r.Msg.Seq)
	}
}

func testRoomKeepsNothing(t *testing.T, f Factory) {
	rules := NewRules(Rule{Max: 10000})
	rules.Set("none", Rule{Max: 0})
	s := open(t, f, store.Retention{Room: rules.Room})
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		m := Msg("none", fmt.Sprint(i))
		r := MustAppend(t, s, m, store.DedupKey("u1", "none", fmt.Sprint(i)))
		if r.Dup || r.Msg.Seq != int64(i) || r.Msg.Message != m.Message || r.Msg.ID != m.ID {
			t.Fatalf("Append %d in a room that keeps nothing: got %+v dup=%v, want the message with seq %d", i, r.Msg, r.Dup, i)
		}
	}
	// A retry still finds its key: the seq and ID of the original.
	again := MustAppend(t, s, Msg("none", "2 again"), store.DedupKey("u1", "none", "2"))
	if !again.Dup || again.Msg.Seq != 2 || again.Msg.ID != Msg("none", "2").ID {
		t.Fatalf("retry in a room that keeps nothing: got %+v dup=%v, want seq 2, the original ID, dup", again.Msg, again.Dup)
	}
	eventually(t, func() string {
		info, page, err := s.Page(ctx, "none", store.Query{Limit: 10, Newest: true})
		if err != nil {
			return err.Error()
		}
		msgs, err := s.Messages(ctx, "none", store.Query{})
		if err != nil {
			return err.Error()
		}
		if len(page) != 0 || len(msgs) != 0 || info.LastSeq != 3 || info.FirstSeq != 0 || info.Truncated(0) || info.Epoch == "" {
			return fmt.Sprintf("room that keeps nothing: page %v, messages %v, info %+v; want none, LastSeq 3, FirstSeq 0, an epoch", seqs(page), seqs(msgs), info)
		}
		return ""
	})
	// A room that kept messages and is set to keep none (a reload) shows
	// none; set back, it keeps what comes next with no gap in seqs.
	MustAppend(t, s, Msg("some", "1"), "")
	MustAppend(t, s, Msg("some", "2"), "")
	rules.Set("some", Rule{Max: 0})
	eventually(t, func() string {
		info, page, err := s.Page(ctx, "some", store.Query{})
		if err != nil {
			return err.Error()
		}
		if len(page) != 0 || info.LastSeq != 2 || info.FirstSeq != 0 {
			return fmt.Sprintf("room set to keep nothing: page %v, info %+v; want none, LastSeq 2, FirstSeq 0", seqs(page), info)
		}
		return ""
	})
	MustAppend(t, s, Msg("some", "3"), "")
	rules.Set("some", Rule{Max: 10})
	if r := MustAppend(t, s, Msg("some", "4"), ""); r.Msg.Seq != 4 {
		t.Fatalf("seq after keeping nothing = %d, want 4", r.Msg.Seq)
	}
	page, err := s.Messages(ctx, "some", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(page); len(got) == 0 || got[len(got)-1] != 4 || slices.Contains(got, 3) {
		t.Fatalf("after keeping nothing then 10: %v; want 4 kept and 3 (sent while nothing was kept) not", got)
	}
}

func testRoomRetentionAge(t *testing.T, f Factory) {
	rules := NewRules(Rule{Max: 10000})
	rules.Set("young", Rule{Max: 10000, Age: time.Hour})
	s := open(t, f, store.Retention{Room: rules.Room})
	ctx := context.Background()
	for _, room := range []string{"young", "other"} {
		old := Msg(room, "old")
		old.TS = old.TS.Add(-2 * time.Hour)
		MustAppend(t, s, old, "")
		MustAppend(t, s, Msg(room, "new"), "")
	}
	eventually(t, func() string {
		info, page, err := s.Page(ctx, "young", store.Query{})
		if err != nil {
			return err.Error()
		}
		if !cmp.Equal([]int64{2}, seqs(page)) || info.FirstSeq != 2 || info.LastSeq != 2 || !info.Truncated(0) {
			return fmt.Sprintf("room with a 1h age: page %v, info %+v; want [2], FirstSeq 2", seqs(page), info)
		}
		return ""
	})
	page, err := s.Messages(ctx, "other", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal([]int64{1, 2}, seqs(page)) {
		t.Fatalf("room without an age: %v, want [1 2]", seqs(page))
	}
}

// Redaction returns a redaction of seq in room, sent by by.
func Redaction(room string, seq int64, by protocol.User) protocol.Message {
	m := Msg(room, "removed a message")
	m.ID = fmt.Sprintf("redact-%s-%d-%s", room, seq, by.UserID)
	m.From = by
	m.Redacts = seq
	return m
}

func testRedaction(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	var want []protocol.Message
	for i := 1; i <= 4; i++ {
		m := Msg("room", fmt.Sprintf("text-%d", i))
		want = append(want, MustAppend(t, s, m, store.DedupKey("u1", "room", fmt.Sprint(i))).Msg)
	}
	mod := protocol.User{UserID: "mod", Name: "moderator"}
	red := MustAppend(t, s, Redaction("room", 2, mod), "")
	if red.Dup || red.Msg.Seq != 5 || red.Msg.Redacts != 2 || red.Msg.From != mod {
		t.Fatalf("redaction: got %+v dup=%v, want seq 5, redacts 2, from the moderator", red.Msg, red.Dup)
	}
	want[1].Message = ""
	want[1].Redacted = &protocol.Redaction{By: mod, Seq: 5}
	want = append(want, red.Msg)
	got, err := s.Messages(ctx, "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after redacting seq 2 (-want +got):\n%s", diff)
	}
	// A retry of the redacted message finds its key and not its text.
	retry := MustAppend(t, s, Msg("room", "text-2"), store.DedupKey("u1", "room", "2"))
	if !retry.Dup || retry.Msg.Seq != 2 || retry.Msg.ID != want[1].ID {
		t.Fatalf("retry of a redacted message: got %+v dup=%v, want seq 2 dup", retry.Msg, retry.Dup)
	}
	// Redacting again, or a seq not stored, stores the redaction and
	// changes nothing else.
	other := protocol.User{UserID: "owner", Name: "owner"}
	again := MustAppend(t, s, Redaction("room", 2, other), "")
	gone := MustAppend(t, s, Redaction("room", 99, other), "")
	self := MustAppend(t, s, Redaction("room", 8, other), "") // its own seq
	if again.Msg.Seq != 6 || gone.Msg.Seq != 7 || self.Msg.Seq != 8 {
		t.Fatalf("redactions got seqs %d, %d, %d; want 6, 7, 8", again.Msg.Seq, gone.Msg.Seq, self.Msg.Seq)
	}
	want = append(want, again.Msg, gone.Msg, self.Msg)
	got, err = s.Messages(ctx, "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after redacting seq 2 again, 99 and itself (-want +got):\n%s", diff)
	}
	// A redaction can be redacted: it keeps its redacts.
	MustAppend(t, s, Redaction("room", 5, other), "")
	got, err = s.Messages(ctx, "room", store.Query{After: 4, Before: 6})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Redacts != 2 || got[0].Message != "" || got[0].Redacted == nil || got[0].Redacted.Seq != 9 {
		t.Fatalf("redacted redaction: %+v; want redacts 2, no text, redacted by seq 9", got)
	}
	// Another room's seq 2 is untouched.
	MustAppend(t, s, Msg("other", "a"), "")
	MustAppend(t, s, Msg("other", "b"), "")
	got, err = s.Messages(ctx, "other", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Message != "b" || got[1].Redacted != nil {
		t.Fatalf("another room after a redaction: %+v", got)
	}
}

// testRedactionInPages: pages over redacted messages stay contiguous in
// seq, whatever their bounds, limit and order.
func testRedactionInPages(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		MustAppend(t, s, Msg("room", fmt.Sprint(i)), "")
	}
	mod := protocol.User{UserID: "mod", Name: "m"}
	for _, seq := range []int64{1, 4, 5, 9, 10} {
		MustAppend(t, s, Redaction("room", seq, mod), "")
	}
	cases := []struct {
		q    store.Query
		want []int64
	}{
		{store.Query{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
		{store.Query{Limit: 3}, []int64{1, 2, 3}},
		{store.Query{After: 3, Limit: 3}, []int64{4, 5, 6}},
		{store.Query{After: 3, Before: 6}, []int64{4, 5}},
		{store.Query{Before: 11, Limit: 3, Newest: true}, []int64{8, 9, 10}},
		{store.Query{Before: 6, Limit: 2, Newest: true}, []int64{4, 5}},
		{store.Query{Limit: 7, Newest: true}, []int64{9, 10, 11, 12, 13, 14, 15}},
		{store.Query{After: 8, Limit: 4}, []int64{9, 10, 11, 12}},
	}
	for _, tc := range cases {
		info, page, err := s.Page(ctx, "room", tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, seqs(page)); diff != "" {
			t.Errorf("Page(%+v) seqs (-want +got):\n%s", tc.q, diff)
		}
		if info.FirstSeq != 1 || info.LastSeq != 15 {
			t.Errorf("Page(%+v) info %+v, want FirstSeq 1, LastSeq 15", tc.q, info)
		}
		for _, m := range page {
			if redacted := slices.Contains([]int64{1, 4, 5, 9, 10}, m.Seq); redacted != (m.Redacted != nil) || redacted != (m.Message == "") {
				t.Errorf("Page(%+v): seq %d is %+v", tc.q, m.Seq, m)
			}
		}
	}
}

func testClear(t *testing.T, f Factory) {
	s := open(t, f, store.Retention{})
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		MustAppend(t, s, Msg("room", fmt.Sprint(i)), "")
		MustAppend(t, s, Msg("other", fmt.Sprint(i)), "")
	}
	MustAppend(t, s, Redaction("room", 2, protocol.User{UserID: "mod"}), "")
	before, err := s.Room(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(ctx, "room"); err != nil {
		t.Fatalf("Clear: %v", err)
	}
	info, page, err := s.Page(ctx, "room", store.Query{Limit: 10, Newest: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 0 || info.LastSeq != 6 || info.FirstSeq != 7 || info.Epoch != before.Epoch {
		t.Fatalf("after Clear: page %v, info %+v; want none, LastSeq 6, FirstSeq 7, epoch %q", seqs(page), info, before.Epoch)
	}
	if !info.Truncated(0) || !info.Truncated(5) || info.Truncated(6) {
		t.Fatalf("after Clear: Truncated(0) %v, (5) %v, (6) %v; want true, true, false", info.Truncated(0), info.Truncated(5), info.Truncated(6))
	}
	if r := MustAppend(t, s, Msg("room", "after"), ""); r.Msg.Seq != 7 {
		t.Fatalf("seq after Clear = %d, want 7", r.Msg.Seq)
	}
	got, err := s.Messages(ctx, "room", store.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal([]int64{7}, seqs(got)) {
		t.Fatalf("after Clear and one message: %v, want [7]", seqs(got))
	}
	if other, err := s.Messages(ctx, "other", store.Query{}); err != nil || len(other) != 5 {
		t.Fatalf("another room after Clear: %d messages, %v; want 5", len(other), err)
	}
	// A room never used clears to nothing.
	if err := s.Clear(ctx, "never"); err != nil {
		t.Fatalf("Clear(unused room): %v", err)
	}
	if ri, err := s.Room(ctx, "never"); err != nil || ri.LastSeq != 0 || ri.Truncated(0) {
		t.Fatalf("unused room after Clear: %+v, %v", ri, err)
	}
}
