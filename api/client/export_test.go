package client

import "time"

// SetDeadlinesForTest replaces the cached entry's times: the token is
// handed out from the cache before staleAt, and is valid before expiry.
func (s *TokenSource) SetDeadlinesForTest(staleAt, expiry time.Time) {
	e := s.cur.Load()
	s.cur.Store(&cached{tok: e.tok, staleAt: staleAt, expiry: expiry})
}
