package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// High availability (SPEC §8): a Sentinel-managed primary, and acks that
// wait for replicas.

// sentinelScheme is the scheme of a URL that names Sentinels and a
// master set instead of one Redis.
const sentinelScheme = "redis+sentinel"

// sentinelRefresh is how often the client asks the Sentinels who the
// primary is, besides following their +switch-master events: a missed
// event costs at most this much of the 10 s a failover may take.
const sentinelRefresh = 2 * time.Second

// errURL is the error of a URL that cannot be used; it quotes nothing of
// the URL, which may hold a password.
var errURL = errors.New("the Redis URL is not valid; want redis://[user:password@]host:port[/db] or redis+sentinel://[user:password@]host:port[,host:port…]/mastername[/db]")

// clientOption turns the URL of Options into rueidis's options:
// redis://[user:password@]host:port[/db], or
// redis+sentinel://[user:password@]host:port[,host:port…]/mastername[/db]
// for a primary that the Sentinels at those addresses manage. In the
// latter, the user and password are those of the Redis servers; the
// query's sentinel_user and sentinel_password, those of the Sentinels.
func clientOption(raw string) (rueidis.ClientOption, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != sentinelScheme {
		copt, err := rueidis.ParseURL(raw)
		if err != nil {
			return copt, errURL
		}
		return copt, nil
	}
	var copt rueidis.ClientOption
	for _, addr := range strings.Split(u.Host, ",") {
		if addr = strings.TrimSpace(addr); addr == "" {
			continue
		}
		if !strings.Contains(addr, ":") {
			addr += ":26379"
		}
		copt.InitAddress = append(copt.InitAddress, addr)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(copt.InitAddress) == 0 || parts[0] == "" || len(parts) > 2 {
		return copt, errURL
	}
	copt.Sentinel.MasterSet = parts[0]
	if len(parts) == 2 {
		if copt.SelectDB, err = strconv.Atoi(parts[1]); err != nil || copt.SelectDB < 0 {
			return copt, errURL
		}
	}
	if u.User != nil {
		copt.Username = u.User.Username()
		copt.Password, _ = u.User.Password()
	}
	q := u.Query()
	copt.Sentinel.Username = q.Get("sentinel_user")
	copt.Sentinel.Password = q.Get("sentinel_password")
	copt.Sentinel.ClientName = "roomchatd"
	copt.Sentinel.TopologyRefreshInterval = sentinelRefresh
	return copt, nil
}

// errNotReplicated is the error of a message that Redis stored but fewer
// replicas than Options.Wait acknowledged in time: it may be lost by a
// failover, so it is not acked. A retry with the same id is answered from
// de-duplication if the message survived.
var errNotReplicated = errors.New("fewer redis replicas than -redis-wait acknowledged the message")

// waitChannel is the channel of the PUBLISH that ends a batch before
// WAIT; nobody subscribes to it.
func (s *Store) waitChannel() string { return s.prefix + ":wait" }

// publishMulti runs a batch's publish scripts as one pipeline. With
// Options.Wait, the pipeline goes on one connection and ends with a
// PUBLISH and WAIT: Redis's WAIT waits for the replication offset of the
// connection's last write, and the PUBLISH (replicated, and cheap) makes
// that offset cover everything written before it by any connection, so
// that a retry answered from de-duplication waits for its original too.
// short is errNotReplicated when fewer replicas than Wait acknowledged
// within half the time left until cutoff: no message of the batch is acked
// then. A pipeline that is lost as a whole, or whose PUBLISH or WAIT got
// no answer, reports it in res, as without Wait.
func (s *Store) publishMulti(ctx context.Context, execs []rueidis.LuaExec, cutoff time.Time) (res []rueidis.RedisResult, short error) {
	if s.wait <= 0 {
		return publishScript.ExecMulti(ctx, s.client, execs...), nil
	}
	c := s.client
	// As ExecMulti does: the script is loaded on every batch, so that a
	// primary that was a replica a moment ago (its script cache empty)
	// runs it.
	sha, err := c.Do(ctx, c.B().ScriptLoad().Script(commonLua+publishLua).Build()).ToString()
	if err != nil {
		res = make([]rueidis.RedisResult, len(execs))
		for i := range res {
			res[i] = rueidis.NewErrorResult(err)
		}
		return res, nil
	}
	cmds := make(rueidis.Commands, 0, len(execs)+2)
	for _, e := range execs {
		cmds = append(cmds, c.B().Evalsha().Sha1(sha).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build())
	}
	// WAIT 0 would wait for ever: at least a millisecond.
	ms := max(time.Until(cutoff).Milliseconds()/2, 1)
	cmds = append(cmds,
		c.B().Publish().Channel(s.waitChannel()).Message("").Build(),
		c.B().Wait().Numreplicas(int64(s.wait)).Timeout(ms).Build())
	// WAIT blocks its connection, so rueidis sends the whole pipeline on
	// a connection of its own: the scripts and WAIT share it.
	all := c.DoMulti(ctx, cmds...)
	res = all[:len(execs)]
	if err := lostErr(all); err != nil {
		// The connection ended before the last answer, and rueidis hands
		// back the answers it read before that: the scripts may have
		// stored the batch, but no WAIT says a replica has it. Sentinel
		// ends a demoted primary's connections so (REPLICAOF and CLIENT
		// KILL TYPE normal) while WAIT waits, and the demoted primary's
		// resync then drops the batch: it is lost as a whole.
		if lostErr(res) == nil {
			s.log.Warn("redis: the connection ended while WAIT waited for replicas (a primary turned into a replica?); refusing the batch its scripts stored", "messages", len(res), "err", err)
		}
		for i := range res {
			res[i] = rueidis.NewErrorResult(err)
		}
		return res, nil
	}
	n, err := all[len(all)-1].AsInt64()
	switch {
	case err != nil:
		short = fmt.Errorf("redis WAIT: %w", err)
	case n < int64(s.wait):
		short = fmt.Errorf("%w (%d of %d within %d ms)", errNotReplicated, n, s.wait, ms)
	}
	if short != nil {
		s.warnShort(short)
	}
	return res, short
}

// warnShort logs that acks wait for replicas that do not answer, at most
// once a minute.
func (s *Store) warnShort(err error) {
	now := time.Now().UnixNano()
	last := s.shortWarned.Load()
	if now-last < int64(time.Minute) || !s.shortWarned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("redis: messages refused because too few replicas acknowledged them (-redis-wait); check the replicas", "err", err)
}

// redactQuery removes the values of the URL's query parameters that hold
// secrets (sentinel_password) from text.
func redactQuery(text string, u *url.URL) string {
	for _, k := range []string{"sentinel_password", "sentinel_user"} {
		if v := u.Query().Get(k); v != "" {
			text = strings.ReplaceAll(text, v, "xxxxx")
			text = strings.ReplaceAll(text, url.QueryEscape(v), "xxxxx")
		}
	}
	return text
}
