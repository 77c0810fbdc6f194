package broker

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler fires each credential's refresh at its due time. One goroutine
// and one timer serve any number of credentials: a heap keyed on due time,
// so 100k credentials cost a heap slot each, not a goroutine each.
type scheduler struct {
	mu   sync.Mutex
	h    dueHeap
	wake chan struct{}
}

func newScheduler() *scheduler { return &scheduler{wake: make(chan struct{}, 1)} }

// schedule sets c's due time, replacing any earlier one; a zero at removes c.
func (s *scheduler) schedule(c *cred, at time.Time) {
	s.mu.Lock()
	switch {
	case at.IsZero() && c.idx >= 0:
		heap.Remove(&s.h, c.idx)
	case at.IsZero():
	case c.idx >= 0:
		c.due = at
		heap.Fix(&s.h, c.idx)
	default:
		c.due = at
		heap.Push(&s.h, c)
	}
	top := len(s.h) > 0 && s.h[0] == c
	s.mu.Unlock()
	if top {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// run calls fire for each credential that comes due until ctx ends. fire
// must not block.
func (s *scheduler) run(ctx context.Context, fire func(*cred)) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		for len(s.h) > 0 && !s.h[0].due.After(now) {
			fire(heap.Pop(&s.h).(*cred))
		}
		wait := time.Hour
		if len(s.h) > 0 {
			wait = s.h[0].due.Sub(now)
		}
		s.mu.Unlock()
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

type dueHeap []*cred

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *dueHeap) Push(x any) {
	c := x.(*cred)
	c.idx = len(*h)
	*h = append(*h, c)
}
func (h *dueHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.idx = -1
	return c
}
