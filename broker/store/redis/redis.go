// Package redis is the store a fleet of brokers shares: records fenced on
// their generation, refresh locks with a lease, and change events, in Redis.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/bsm/redislock"
	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
)

// Options configure a Store.
type Options struct {
	// Client is a plain, Sentinel or Cluster client.
	Client Client
	// Prefix namespaces keys and the event channel, so fleets can share a
	// Redis; default "tokenbroker:".
	Prefix string
	// LockTTL is the refresh lock's lease; it is extended every LockTTL/3
	// while a refresh is in flight. Default 15s.
	LockTTL time.Duration
	// OpTimeout bounds each Redis command. Default 2s.
	OpTimeout time.Duration
	// Sealer encrypts values; nil stores them in plaintext.
	Sealer *seal.Sealer
}

var (
	_ store.Store = (*Store)(nil)
	_ store.Lock  = (*lease)(nil)
	_ Client      = goredis.UniversalClient(nil)
)

// Client is what the store asks of go-redis: scripts, one read, and a
// subscription. A plain, Sentinel or Cluster client has them.
type Client interface {
	goredis.Scripter
	HGet(ctx context.Context, key, field string) *goredis.StringCmd
	Subscribe(ctx context.Context, channels ...string) *goredis.PubSub
}

// Store shares records between the brokers of a fleet. A credential's
// record and lock share a hash tag, so they live in one Cluster slot. Writes
// are fenced on the generation inside one Lua script, which also publishes
// the change, so a broker whose lease expired can never overwrite a newer
// refresh token.
type Store struct {
	c      Client
	locker *redislock.Client
	sealer *seal.Sealer
	prefix string
	ttl    time.Duration
	op     time.Duration

	// Locks whose outcome is unknown, by key, released by the reaper.
	mu      sync.Mutex
	orphans map[string]*orphans
	reaping bool
	closed  bool
	wake    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
}

// orphans are the owner tokens of one key's lock that this store may hold
// without knowing it: attempts or releases that got no answer.
type orphans struct {
	tokens []string
	until  time.Time // when to give up, once Redis answered; zero before
}

// maxOrphans bounds the tokens kept per key through a long outage, in
// which every refresh retry adds one; the oldest go first.
const maxOrphans = 32

// New returns a store over opts.Client. It does not contact Redis.
func New(opts Options) (*Store, error) {
	if opts.Client == nil {
		return nil, errors.New("redis store: no client")
	}
	if opts.Prefix == "" {
		opts.Prefix = "tokenbroker:"
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 15 * time.Second
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 2 * time.Second
	}
	return &Store{c: opts.Client, locker: redislock.New(opts.Client), sealer: opts.Sealer, prefix: opts.Prefix, ttl: opts.LockTTL, op: opts.OpTimeout,
		orphans: map[string]*orphans{}, wake: make(chan struct{}, 1), stop: make(chan struct{})}, nil
}

func (s *Store) recKey(key string) string  { return s.prefix + "{" + key + "}:rec" }
func (s *Store) lockKey(key string) string { return s.prefix + "{" + key + "}:lock" }
func (s *Store) channel() string           { return s.prefix + "events" }

// saveScript writes the record only over an older generation, and
// publishes the key in the same step.
var saveScript = goredis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if cur >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'val', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// Load implements store.Store.
func (s *Store) Load(ctx context.Context, key string) (store.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.op)
	defer cancel()
	b, err := s.c.HGet(ctx, s.recKey(key), "val").Bytes()
	if errors.Is(err, goredis.Nil) {
		return store.Record{}, store.ErrNotFound
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("redis: reading %s: %w", key, err)
	}
	r, err := s.sealer.Decode(key, b)
	if err != nil {
		return store.Record{}, fmt.Errorf("redis: %s: %w", key, err)
	}
	return r, nil
}

// Save writes rec unless the same or a higher generation is stored
// (store.ErrStale), and publishes key to the other brokers.
func (s *Store) Save(ctx context.Context, key string, rec store.Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.op)
	defer cancel()
	n, err := saveScript.Run(ctx, s.c, []string{s.recKey(key)},
		strconv.FormatUint(rec.Generation, 10), s.sealer.Encode(key, rec), s.channel(), key).Int()
	if err != nil {
		return fmt.Errorf("redis: saving %s: %w", key, err)
	}
	if n == 0 {
		return store.ErrStale
	}
	return nil
}

// Acquire implements store.Store: the claim is the Redis lock. Nothing is ever
// put back into Redis by this store alone, so there is nothing to settle.
func (s *Store) Acquire(ctx context.Context, key string, mode store.Mode) (store.Claim, error) {
	var l store.Lock = store.HeldLock
	if mode&store.NoLock == 0 {
		var err error
		if l, err = s.Lock(ctx, key); err != nil {
			return nil, err
		}
	}
	rec, err := s.Load(ctx, key)
	return store.NewClaim(l, rec, err, func(ctx context.Context, rec store.Record) error { return s.Save(ctx, key, rec) }), nil
}

// Lock implements store.Store: the lock's value is a random owner token
// (redislock); release and extension act only while it is still ours.
func (s *Store) Lock(ctx context.Context, key string) (store.Lock, error) {
	token, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("redis: locking %s: %w", key, err)
	}
	octx, cancel := context.WithTimeout(ctx, s.op)
	defer cancel()
	l, err := s.locker.Obtain(octx, s.lockKey(key), s.ttl, &redislock.Options{Token: token})
	if errors.Is(err, redislock.ErrNotObtained) {
		return nil, store.ErrLockHeld
	}
	if err != nil {
		// No answer (timeout, cut link): the SET may still reach Redis,
		// even after the link is back, and take the lock for a whole lease
		// with no owner to use or release it; peers would wait it out.
		s.forget(s.lockKey(key), token)
		return nil, fmt.Errorf("redis: locking %s: %w", key, err)
	}
	ls := &lease{l: l, ttl: s.ttl, op: s.op, stop: make(chan struct{}), forget: s.forget}
	ls.wg.Add(1)
	go ls.extend()
	return ls, nil
}

// lease extends its lock until released, for as long as a refresh
// awaits a slow provider (minutes). A failed extension (Redis slow or
// restarting) is tried again at the next tick; only a lock that is no
// longer ours (it expired, or Redis lost it and a peer took it) ends the
// extending. The generation fence keeps the write safe either way.
type lease struct {
	l    *redislock.Lock
	ttl  time.Duration
	op   time.Duration
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	// forget hands a release that got no answer to the store's reaper.
	forget func(key, token string)
}

func (l *lease) extend() {
	defer l.wg.Done()
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.op)
			err := l.l.Refresh(ctx, l.ttl, nil)
			cancel()
			if errors.Is(err, redislock.ErrNotObtained) {
				return
			}
		}
	}
}

// Held implements store.Lock: Redis forgets a lock when it restarts empty
// or is flushed, and another broker may then have taken it.
func (l *lease) Held(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.op)
	defer cancel()
	ttl, err := l.l.TTL(ctx)
	return ttl > 0, err
}

// Release implements store.Lock.
func (l *lease) Release(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	err := l.l.Release(ctx)
	if errors.Is(err, redislock.ErrLockNotHeld) {
		return nil // expired; nothing to release
	}
	if err != nil && l.forget != nil {
		// Peers would otherwise wait out the lease.
		l.forget(l.l.Key(), l.l.Token())
	}
	return err
}

// Watch implements store.Store: it calls fn with each key another broker saved,
// and with "" after a reconnection, when events may have been missed (the
// broker then re-reads every credential; a fleet store first puts its
// local records back into a Redis that restarted empty).
func (s *Store) Watch(ctx context.Context, fn func(key string)) error {
	ps := s.c.Subscribe(ctx, s.channel())
	defer ps.Close()
	// Receive does not watch ctx: closing the subscription unblocks it.
	defer context.AfterFunc(ctx, func() { ps.Close() })()
	subscribed, wait := false, 50*time.Millisecond
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// go-redis reconnects and resubscribes on the next Receive.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			// Capped low: a peer that put an older record back into a
			// Redis that restarted empty waits the fleet store's SettleTime (2s)
			// for this broker to answer with a newer one, and this broker
			// hears of it only once it has subscribed again.
			wait = min(2*wait, 250*time.Millisecond)
			continue
		}
		wait = 50 * time.Millisecond
		switch m := msg.(type) {
		case *goredis.Subscription:
			if subscribed {
				fn("")
			}
			subscribed = true
		case *goredis.Message:
			fn(m.Payload)
		}
	}
}

// Close implements store.Store: it stops releasing forgotten locks (they
// expire with their lease), waiting for at most one command in flight;
// the caller owns the client.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// releaseScript deletes a lock only while it holds one of the given owner
// tokens, as redislock's release does: a lock that is not ours is left alone.
var releaseScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
for _, t in ipairs(ARGV) do
  if v == t then return redis.call('DEL', KEYS[1]) end
end
return 0
`)

// isReply tells an error Redis answered with (which starts the reaper's
// clock) from a timeout or a network error.
func isReply(err error) bool {
	var re goredis.Error
	return errors.As(err, &re)
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// forget hands the reaper a lock this store may hold without knowing it.
func (s *Store) forget(key, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	o := s.orphans[key]
	if o == nil {
		o = &orphans{}
		s.orphans[key] = o
	}
	o.tokens = append(o.tokens, token)
	if len(o.tokens) > maxOrphans {
		o.tokens = o.tokens[len(o.tokens)-maxOrphans:]
	}
	o.until = time.Time{} // a new unknown: wait for Redis to answer again
	if !s.reaping {
		s.reaping = true
		s.wg.Add(1)
		go s.reap()
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// reapEvery is how often the reaper tries its releases: short, since a
// late SET that lands between two tries blocks the fleet until the next.
func (s *Store) reapEvery() time.Duration { return min(200*time.Millisecond, s.ttl/10) }

// reap releases forgotten locks by compare-and-delete, one command per
// key. The SET of an attempt that got no answer can land late (1.2 s
// after a cut link came back, in the partition run), so each key's tokens
// are released again at every tick until one lease has passed since Redis
// first answered for them. It ends when nothing is left, and on Close.
func (s *Store) reap() {
	defer s.wg.Done()
	t := time.NewTicker(s.reapEvery())
	defer t.Stop()
	for {
		s.mu.Lock()
		todo := make(map[string][]any, len(s.orphans))
		for key, o := range s.orphans {
			for _, tok := range o.tokens {
				todo[key] = append(todo[key], tok)
			}
		}
		s.mu.Unlock()
		for key, tokens := range todo {
			ctx, cancel := context.WithTimeout(context.Background(), s.op)
			err := releaseScript.Run(ctx, s.c, []string{key}, tokens...).Err()
			cancel()
			if err != nil && !isReply(err) {
				break // no answer: the clocks have not started; all again at the next tick
			}
			now := time.Now()
			s.mu.Lock()
			if o := s.orphans[key]; o != nil {
				switch {
				case o.until.IsZero():
					o.until = now.Add(s.ttl)
				case now.After(o.until):
					delete(s.orphans, key)
				}
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			default:
			}
		}
		s.mu.Lock()
		if len(s.orphans) == 0 || s.closed {
			s.reaping = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}
