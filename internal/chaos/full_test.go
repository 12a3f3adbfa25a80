//go:build chaos

package chaos

import (
	"flag"
	"testing"
	"time"
)

var (
	fullSeed     = flag.Uint64("chaos.seed", 0, "seed (0: from TEATREE_CHAOS_SEED or the clock)")
	fullRequests = flag.Int("chaos.requests", 10000, "requests")
	fullModels   = flag.Int("chaos.models", 20, "models")
	fullFaults   = flag.Int("chaos.faults", 200, "faults")
)

// TestChaosFull is make chaos: 10,000 requests over 20 models from 8
// clients, 200 faults.
func TestChaosFull(t *testing.T) {
	seed := *fullSeed
	if seed == 0 {
		seed = seedFromEnv()
	}
	run(t, params{seed: seed, models: *fullModels, requests: *fullRequests, clients: 8, faults: *fullFaults, interval: 2 * time.Second, leaseTTL: 3 * time.Second})
}
