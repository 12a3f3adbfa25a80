package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/svcinfo"
)

// derivedQuery is TestDerivedKill9's derived table: maintained
// incrementally on appends, recomputed on deletes; integer aggregates, so
// a version's table must equal its query exactly.
const derivedQuery = "SELECT k, count(*) AS c, sum(n) AS s, min(n) AS lo, max(n) AS hi FROM t GROUP BY ALL"

// TestDerivedKill9 submits appends and deletes to a model with a derived
// table while its db-manager process is killed with SIGKILL at random
// moments (the dispatcher of teactl dev starts it again), and checks every
// published version: the derived table equals its query on that version.
// A kill between a commit (inputs and derived table) and the version it
// becomes must leave no version with a stale output.
func TestDerivedKill9(t *testing.T) {
	d := startDev(t, stackDir(t))
	d.must(t, "model", "create", "kd")
	d.must(t, "submit", "kd", "create_table", "--wait", "--args", `{"table":"t","columns":[{"name":"n","type":"BIGINT"},{"name":"k","type":"BIGINT"}]}`)
	d.must(t, "submit", "kd", "derive", "--wait", "--args", fmt.Sprintf(`{"table":"d","query":%q}`, derivedQuery))
	rng := rand.New(rand.NewPCG(9, 9))
	kills := 0
	for round := range 4 {
		done := make(chan struct{})
		rows := rand.New(rand.NewPCG(uint64(round), 1))
		go func() {
			defer close(done)
			for i := range 8 {
				args := fmt.Sprintf(`{"table":"t","rows":[{"n":%d,"k":%d},{"n":%d,"k":%d}]}`, rows.IntN(1000), rows.IntN(4), rows.IntN(1000), rows.IntN(4))
				fn := "append"
				if i%4 == 3 {
					fn, args = "delete", fmt.Sprintf(`{"table":"t","where":[{"column":"n","op":">","value":%d}]}`, 900+rows.IntN(100))
				}
				if _, errOut, code := d.teactl(t, "submit", "kd", fn, "--args", args, "--id", fmt.Sprintf("r%d-%d", round, i)); code != 0 {
					t.Errorf("submit: exit %d: %s", code, errOut)
				}
			}
		}()
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		for range 10 { // the db-manager may be starting again
			if pid := dbManagerPID(t, d, "kd"); pid > 0 {
				if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
					kills++
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		<-done
	}
	d.must(t, "submit", "kd", "append", "--wait", "--args", `{"table":"t","rows":[{"n":1,"k":1}]}`)
	if kills < 2 {
		t.Fatalf("%d db-managers killed, want at least 2", kills)
	}
	var versions []struct {
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal([]byte(d.must(t, "versions", "kd", "--json")), &versions); err != nil {
		t.Fatal(err)
	}
	check := "SELECT (SELECT count(*) FROM (FROM d EXCEPT ALL " + derivedQuery + ")) + (SELECT count(*) FROM (" + derivedQuery + " EXCEPT ALL FROM d)) AS stale"
	for _, v := range versions {
		if v.Version == 1 { // create_table alone: no d yet
			continue
		}
		out := d.must(t, "query", fmt.Sprintf("kd@%d", v.Version), check, "--format", "csv", "--local")
		if strings.TrimSpace(out) != "stale\n0" {
			t.Errorf("version %d: rows of d not equal to its query: %q", v.Version, out)
		}
	}
	t.Logf("%d kills, %d versions checked", kills, len(versions))
}

// dbManagerPID is the PID of the db-manager of model m (teactl info), 0
// when none answers.
func dbManagerPID(t *testing.T, d *devStack, m string) int {
	out, _, code := d.teactl(t, "info", "--json")
	if code != 0 {
		return 0
	}
	var all []svcinfo.Info
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("info --json: %v\n%s", err, out)
	}
	for _, in := range all {
		if strings.Contains(in.Kind, "dbmanager") && in.Metadata["model"] == m {
			return in.PID
		}
	}
	return 0
}
