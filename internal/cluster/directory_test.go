package cluster_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/roomchat/roomchat/internal/cluster"
	"github.com/roomchat/roomchat/internal/redistest"
)

// openDirectory opens a store on srv under prefix and a directory on it
// with a resume window of 2 minutes, both closed when the test ends.
func openDirectory(t *testing.T, srv *redistest.Server, prefix string) *cluster.Directory {
	t.Helper()
	st, err := openWith(srv, prefix)
	if err != nil {
		t.Fatal(err)
	}
	d := cluster.NewDirectory(st, 2*time.Minute)
	t.Cleanup(func() {
		d.Close()
		st.Close()
	})
	return d
}

// resume asks d whether a token of user issued at issued resumes it,
// with a new token issued at next, and fails the test unless the answer
// is (known, ok).
func resume(t *testing.T, d *cluster.Directory, user string, issued, next time.Time, overlap time.Duration, known, ok bool, why string) {
	t.Helper()
	k, o, err := d.Resume(context.Background(), user, issued, next, overlap)
	if err != nil {
		t.Fatalf("%s: %v", why, err)
	}
	if k != known || o != ok {
		t.Fatalf("%s: known %v, resumed %v; want %v, %v", why, k, o, known, ok)
	}
}

func str(m rueidis.RedisMessage) string {
	s, _ := m.ToString()
	return s
}

func num(m rueidis.RedisMessage) int64 {
	n, _ := m.AsInt64()
	return n
}

func unixMS(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// A failover to a replica that had not got a user's record (or a crash
// that lost Redis's last writes) must not cost a client its userID (SPEC
// §8: resume on any path; de-duplication is per user): without a record,
// a token issued within the resume window resumes the user, and the
// record comes back with the new token as the newest; a token older than
// the window still finds an unknown user.
func TestDirectoryResumeWithoutRecord(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	d := openDirectory(t, srv, prefix)
	now := time.UnixMilli(time.Now().UnixMilli())
	overlap := 30 * time.Second

	issued := now.Add(-20 * time.Second)
	resume(t, d, "lost", issued, now, overlap, true, true, "a token 20 s old of a user without a record")
	admin := srv.Client()
	if got := str(srv.Do(admin, "HGET", prefix+":user:lost", "t")); got != unixMS(now) {
		t.Fatalf("the record's newest token after the resume: %q, want %s", got, unixMS(now))
	}
	if ttl := num(srv.Do(admin, "PTTL", prefix+":user:lost")); ttl <= 0 {
		t.Fatalf("the record written back has PTTL %d, want a lifetime", ttl)
	}
	// The record is the directory's again: the new token resumes, the
	// presented one within its overlap, an older one not at all.
	resume(t, d, "lost", issued.Add(-time.Second), now.Add(time.Millisecond), overlap, true, false, "a token older than the one that resumed")
	resume(t, d, "lost", now, now.Add(2*time.Millisecond), overlap, true, true, "the new token")

	resume(t, d, "gone", now.Add(-3*time.Minute), now, overlap, false, false, "a token older than the window of a user without a record")
	if n := num(srv.Do(admin, "EXISTS", prefix+":user:gone")); n != 0 {
		t.Fatal("an unknown user's resume wrote a record")
	}
}

// A failover (or a Redis that lost its last writes) that took the write
// of a user's newest token leaves the record naming an older one: the
// client's token, newer than any the record knows, is its newest, not a
// replay, and resumes the user; a token the record knows to be
// superseded still does not.
func TestDirectoryResumeNewerThanRecord(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	prefix := redistest.Prefix(t)
	d := openDirectory(t, srv, prefix)
	now := time.UnixMilli(time.Now().UnixMilli())
	key := prefix + ":user:u"
	admin := srv.Client()

	// What the replica had: the user connected with a token issued at
	// older; the resume that issued newer was lost.
	older, newer := now.Add(-40*time.Second), now.Add(-5*time.Second)
	srv.Do(admin, "HSET", key, "t", unixMS(older), "n", "elsewhere")
	srv.Do(admin, "PEXPIRE", key, "180000")
	resume(t, d, "u", newer, now, time.Millisecond, true, true, "a token newer than the record's")

	later := now.Add(5 * time.Millisecond) // past the 1 ms overlap: the directory's now is the new token's issue time
	resume(t, d, "u", older, later, time.Millisecond, true, false, "the token the record named before")
	resume(t, d, "u", newer, later, time.Millisecond, true, false, "the token replaced, past its overlap")

	// A token between the record's newest and the one it replaced is
	// not newer than what the record knows.
	srv.Do(admin, "HSET", key, "t", unixMS(now), "p", unixMS(newer), "pu", "0", "m", unixMS(now.Add(time.Second)))
	resume(t, d, "u", now.Add(500*time.Millisecond), later, time.Millisecond, true, false, "a token older than the newest the record held")
	resume(t, d, "u", now.Add(2*time.Second), later, time.Millisecond, true, true, "a token newer than the newest the record held")
}
