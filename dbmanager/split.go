package dbmanager

import "time"

// split times the consecutive steps of one cut or publication for its log
// line: step ends the step named name and starts the next.
type split struct {
	last  time.Time
	attrs []any
}

func newSplit() *split { return &split{last: time.Now()} }

func (s *split) step(name string) {
	now := time.Now()
	s.attrs = append(s.attrs, name, now.Sub(s.last).Round(time.Millisecond))
	s.last = now
}
