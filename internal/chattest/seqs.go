package chattest

import (
	"fmt"
	"testing"

	"github.com/roomchat/roomchat/internal/protocol"
)

// Seqs returns the seqs of msgs, in their order.
func Seqs(msgs []protocol.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// SeqRun returns nil if seqs are exactly from, from+1, …, to (SPEC §4: a
// room's seqs grow by one, with no gap and no duplicate); else an error
// that names the first seq out of place and shows the seqs around it, or
// says where the run ended short or went past to.
func SeqRun(seqs []int64, from, to int64) error {
	want := from
	for i, s := range seqs {
		if s != want {
			lo, hi := max(0, i-3), min(len(seqs), i+4)
			return fmt.Errorf("at position %d seq %d, want %d (a gap, a repeat or a wrong order); around it: %v", i, s, want, seqs[lo:hi])
		}
		want++
	}
	if want != to+1 {
		return fmt.Errorf("%d seqs ending at %d, want %d..%d", len(seqs), want-1, from, to)
	}
	return nil
}

// CheckSeqs fails t at once unless seqs are exactly from, from+1, …, to
// (see SeqRun); what says whose seqs they are.
func CheckSeqs(t testing.TB, what string, seqs []int64, from, to int64) {
	t.Helper()
	if err := SeqRun(seqs, from, to); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
