package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomchat/roomchat/internal/client"
	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/redistest"
)

// High availability (SPEC §8) with real processes: a primary, two
// replicas and three Sentinels, two nodes on redis+sentinel:// with
// -redis-wait 1. Writers on both nodes send with ids and retry what is
// refused; the primary is killed (SIGKILL) mid-traffic. The nodes serve
// again within 10 s of the kill, by themselves, and every acked id is in
// the history exactly once, with its acked seq. Two replicas, because
// -redis-wait 1 needs one replica after the failover too.
func TestClusterSentinelFailover(t *testing.T) {
	t.Parallel() // its own Redis and nodes
	h := redistest.StartHA(t, redistest.HAOptions{Replicas: 2})
	nodes := startNodesOn(t, h.URL(), 2, "-redis-wait", "1")

	cfg := chaosConfig{window: 4, pace: 60 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var runs []*chaosRun
	var writers []*chaosWriter
	var wg sync.WaitGroup
	for i, node := range nodes {
		r := &chaosRun{url: node.URL}
		runs = append(runs, r)
		for k := range 2 {
			w := &chaosWriter{n: 2*i + k, r: r, cfg: cfg, acked: map[string]protocol.Ack{}, probing: map[string]bool{}, resent: map[string]bool{}}
			writers = append(writers, w)
			wg.Go(func() { w.run(ctx, stop) })
		}
	}
	time.Sleep(2 * time.Second) // traffic before the fault

	old := h.Primary()
	killed := time.Now()
	old.Kill()
	primary := h.PrimaryOtherThan(old, 10*time.Second)
	t.Logf("the sentinels named %s the primary %v after the kill", primary.Addr, time.Since(killed).Round(time.Millisecond))
	var pwg sync.WaitGroup
	for i, node := range nodes {
		pwg.Go(func() {
			d, err := firstAck(ctx, node.URL, fmt.Sprint("probe-", i), killed.Add(10*time.Second))
			if err != nil {
				t.Errorf("node %d: no ack within 10 s of the kill: %v", i, err)
				return
			}
			t.Logf("node %d: acks again %v after the kill", i, d.Round(time.Millisecond))
		})
	}
	pwg.Wait()
	time.Sleep(2 * time.Second) // traffic after the failover
	close(stop)
	wg.Wait()

	msgs := allMessages(t, nodes[0].URL)
	v := verifyStored(msgs, writers)
	for _, r := range runs {
		v.findings = append(v.findings, r.findings...)
	}
	t.Logf("sentinel failover: %d messages stored, %d ids acked, %d lost, %d duplicated, %d refused and retried",
		len(msgs), v.acked, v.lost, v.duplicated, runs[0].retried.Load()+runs[1].retried.Load())
	for _, f := range v.findings {
		t.Error(f)
	}
	if v.acked == 0 {
		t.Error("no traffic")
	}
}

// firstAck sends one msg with an id to room "probe" on the node at base,
// again and again (the same id: de-duplication keeps it once) until it is
// acked, and returns how long after the start of the fault (the deadline
// less 10 s) that was; it gives up at deadline.
func firstAck(ctx context.Context, base, id string, deadline time.Time) (time.Duration, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var c *client.Conn
	defer func() {
		if c != nil {
			c.CloseNow()
		}
	}()
	err := errors.New("not tried")
	for ctx.Err() == nil {
		if c == nil {
			if c, err = client.Dial(ctx, base, client.Options{}); err != nil {
				c = nil
				continue
			}
			if _, err = c.Join(ctx, "probe", "probe", nil); err != nil {
				c.CloseNow()
				c = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		_, _, err = c.SendMessageID(actx, id, "probe", "probe "+id)
		acancel()
		if err == nil {
			return time.Since(deadline.Add(-10 * time.Second)), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, err
}

// storedCheck is what the history says of the writers' ids: the outcome of a
// campaign.
type storedCheck struct {
	acked, unacked   int // ids acked; stored without an ack seen
	lost, duplicated int
	findings         []string
}

// verifyStored checks the history msgs (every stored message of the room,
// oldest first) against the writers' acks: seqs without a gap, no id
// stored twice, every acked id stored once with its acked seq and msgID.
func verifyStored(msgs []protocol.Message, writers []*chaosWriter) storedCheck {
	var v storedCheck
	found := func(format string, args ...any) {
		if len(v.findings) < 1000 {
			v.findings = append(v.findings, fmt.Sprintf(format, args...))
		}
	}
	stored := map[string]protocol.Message{}
	for i, m := range msgs {
		if i > 0 && m.Seq != msgs[i-1].Seq+1 {
			found("stored seq %d follows seq %d (a gap or a repeat)", m.Seq, msgs[i-1].Seq)
		}
		id, ok := strings.CutPrefix(m.Message, "chaos ")
		if !ok {
			found("stored message seq %d has text %q", m.Seq, m.Message)
			continue
		}
		if prev, dup := stored[id]; dup {
			v.duplicated++
			found("DUPLICATED: id %s stored twice: seqs %d and %d", id, prev.Seq, m.Seq)
			continue
		}
		stored[id] = m
	}
	ackedIDs := map[string]bool{}
	for _, w := range writers {
		for id, a := range w.acked {
			v.acked++
			ackedIDs[id] = true
			m, ok := stored[id]
			switch {
			case !ok:
				v.lost++
				found("LOST: %s acked as seq %d, not stored", id, a.Seq)
			case m.Seq != a.Seq || m.ID != a.MsgID:
				v.lost++
				found("%s acked as seq %d msgID %s, stored as seq %d msgID %s", id, a.Seq, a.MsgID, m.Seq, m.ID)
			}
		}
	}
	for id := range stored {
		if !ackedIDs[id] {
			v.unacked++
		}
	}
	return v
}
