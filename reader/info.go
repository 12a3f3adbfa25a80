package reader

import (
	"context"
	"maps"
	"slices"

	"github.com/teatree/teatree/internal/svcinfo"
)

// info reports the models the reader has open with their latest versions,
// the queries in flight and the last failed query (teactl info).
func (s *Server) info(context.Context) svcinfo.Info {
	st := s.Stats()
	return svcinfo.Info{
		Models:    slices.Sorted(maps.Keys(st.Versions)),
		Versions:  st.Versions,
		InFlight:  st.Active,
		LastError: s.errs.Last(),
	}
}
