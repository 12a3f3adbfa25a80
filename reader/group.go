package reader

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// serveGroup answers a query on group g (subject teatree.group.<g>) over
// the union of its members' latest versions, in one DuckDB instance: the
// members (controldb.GroupMembers, ordered by id) are acquired as a model
// query acquires its version (opened if need be, a reference held until
// the query ends), then an in-memory DuckDB attaches their files
// read-only as db_1, db_2, … in that order before its external access is
// locked, and has, for every table name of any member, a view
// main.<table> that is the UNION ALL BY NAME of the members holding that
// table (a member without the table adds no rows; a column some member
// lacks is NULL in its rows). The query runs there with the model path's
// rules, pages and limits; the pages carry HeaderGroup, HeaderMembers and,
// for a partial query, HeaderFailed. A member that fails (no published
// version, a failed open) fails the query with its name, unless
// r.Partial: then it is left out and listed; the query fails still when
// every member does.
func (s *Server) serveGroup(ctx context.Context, req micro.Request) {
	g := strings.TrimPrefix(req.Subject(), GroupSubjectPrefix)
	bad := model.ValidateID(g)
	if bad != nil {
		bad = fmt.Errorf("group %q: %w", g, bad)
	}
	s.admit(ctx, req, g, bad, func(qctx context.Context, r Request) error {
		if r.Version != 0 {
			return fmt.Errorf("%w: group %s: a group query runs on each member's latest version: drop the version", model.ErrInvalid, g)
		}
		ids, err := s.ctl.GroupMembers(qctx, g)
		if err != nil {
			return err
		}
		ovs := make([]*openVersion, len(ids))
		errs := make([]error, len(ids))
		var wg sync.WaitGroup
		for i, m := range ids {
			wg.Go(func() { ovs[i], errs[i] = s.acquire(qctx, ctx, m, 0) })
		}
		wg.Wait()
		defer func() {
			for _, ov := range ovs {
				if ov != nil {
					s.release(ov)
				}
			}
		}()
		var members []Member
		var failed []MemberError
		var union []duck.UnionMember
		for i, m := range ids {
			if errs[i] != nil {
				if !r.Partial {
					return fmt.Errorf("group %s: member %s: %w", g, m, errs[i])
				}
				msg, _, _ := strings.Cut(errs[i].Error(), "\n")
				failed = append(failed, MemberError{Model: m, Error: msg})
				continue
			}
			members = append(members, Member{Model: m, Version: ovs[i].v.Version})
			union = append(union, duck.UnionMember{Path: ovs[i].path, Tables: ovs[i].v.TableNames()})
		}
		if len(members) == 0 {
			return fmt.Errorf("group %s: every member failed: %s: %s", g, failed[0].Model, failed[0].Error)
		}
		db, err := duck.OpenUnion(qctx, union, duck.Options{Threads: s.cfg.Threads, MemoryLimit: s.cfg.MemoryLimit})
		if err != nil {
			return fmt.Errorf("reader: group %s: %w", g, err)
		}
		defer db.Close()
		hdr := nats.Header{}
		hdr.Set(HeaderGroup, g)
		js, _ := json.Marshal(members)
		hdr.Set(HeaderMembers, string(js))
		if len(failed) > 0 {
			js, _ = json.Marshal(failed)
			hdr.Set(HeaderFailed, string(js))
		}
		return s.stream(qctx, db, hdr, g, r, req.Reply())
	})
}
