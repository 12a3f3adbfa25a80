package chaos

import (
	"context"
	"math/rand/v2"
	"sort"
	"syscall"
	"time"
)

// Fault kinds.
const (
	killDBManager   = "kill_dbm"        // SIGKILL a db-manager at a random moment
	killDispatcher  = "kill_dispatcher" // SIGKILL the dispatcher (its supervisor restarts it)
	restartNATS     = "restart_nats"    // SIGKILL nats-server, start it again on the same store
	restartPostgres = "restart_pg"      // fast shutdown of Postgres, start it again
	stopMinIO       = "stop_minio"      // MinIO down for 1–3 s
	pauseDBManager  = "pause_dbm"       // SIGSTOP a db-manager longer than its lease while a second writer starts
)

var faultWeights = []struct {
	kind   string
	weight int
}{
	{killDBManager, 40}, {killDispatcher, 10}, {restartNATS, 12}, {restartPostgres, 12}, {stopMinIO, 16}, {pauseDBManager, 10},
}

// inject runs up to n faults, one about every interval, until ctx ends,
// and returns the count by kind. Every fault is healed before the next one starts, except that a
// second writer is stopped a little later.
func (c *cluster) inject(ctx context.Context, rng *rand.Rand, n int, interval time.Duration) map[string]int {
	counts := map[string]int{}
	total := 0
	for _, f := range faultWeights {
		total += f.weight
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
			return counts
		case <-time.After(interval/2 + time.Duration(rng.Int64N(int64(interval)))):
		}
		r := rng.IntN(total)
		kind := faultWeights[0].kind
		for _, f := range faultWeights {
			if r < f.weight {
				kind = f.kind
				break
			}
			r -= f.weight
		}
		if c.fault(context.WithoutCancel(ctx), rng, kind) {
			counts[kind]++
		} else {
			i-- // nothing to hit (no db-manager running): try again
		}
	}
	return counts
}

// randomDBManager picks a running db-manager started by the dispatcher.
func (c *cluster) randomDBManager(rng *rand.Rand) (string, int, bool) {
	var models []string
	pids := c.dbManagers()
	for m := range pids {
		models = append(models, m)
	}
	sort.Strings(models)
	for len(models) > 0 {
		i := rng.IntN(len(models))
		m := models[i]
		for _, pid := range pids[m] {
			c.mu.Lock()
			extra := c.extra[pid]
			c.mu.Unlock()
			if !extra {
				return m, pid, true
			}
		}
		models = append(models[:i], models[i+1:]...)
	}
	return "", 0, false
}

func (c *cluster) fault(ctx context.Context, rng *rand.Rand, kind string) bool {
	switch kind {
	case killDBManager:
		_, pid, ok := c.randomDBManager(rng)
		if !ok {
			return false
		}
		syscall.Kill(pid, syscall.SIGKILL)
	case killDispatcher:
		c.mu.Lock()
		p := c.dispatcher
		c.mu.Unlock()
		if p == nil || !p.running() {
			return false
		}
		p.kill()
	case restartNATS:
		c.nats.kill()
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		c.startNATS()
	case restartPostgres:
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c.pg.Stop(sctx)
		cancel()
		c.restartPostgres(ctx)
	case stopMinIO:
		c.minio.Stop()
		time.Sleep(time.Second + time.Duration(rng.IntN(2000))*time.Millisecond)
		c.startMinIO()
	case pauseDBManager:
		m, pid, ok := c.randomDBManager(rng)
		if !ok {
			return false
		}
		syscall.Kill(pid, syscall.SIGSTOP)
		// The process is alive, so the dispatcher starts no other; a node
		// partition looks like this to Kubernetes, which would reschedule.
		// The harness starts the second writer itself.
		second := c.start("dbmanager", c.env, "--model", m)
		c.mu.Lock()
		c.extra[second.cmd.Process.Pid] = true
		c.mu.Unlock()
		time.Sleep(c.leaseTTL + time.Second + time.Duration(rng.IntN(1000))*time.Millisecond)
		syscall.Kill(pid, syscall.SIGCONT)
		go func() {
			// The second writer drains, checkpoints and releases its lease
			// a while later; the dispatcher's db-manager takes over.
			time.Sleep(2 * time.Second)
			second.stop(30 * time.Second)
		}()
	}
	return true
}

func (c *cluster) restartPostgres(ctx context.Context) {
	for {
		pg, err := startPostgres(ctx, c)
		if err == nil {
			c.pg = pg
			return
		}
		if ctx.Err() != nil {
			c.t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
