package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevStackKeepsDataAcrossRestart is the tour of issue "core write
// path": teactl dev with a private Postgres, a model, requests applied and
// announced, bad input refused with the documented exit codes, and a
// restart on the same directory that keeps every version.
func TestDevStackKeepsDataAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	dir := stackDir(t)
	d := startDev(t, dir)

	d.must(t, "model", "create", "shop")
	if out := d.must(t, "migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("migrate on a migrated database: %q", out)
	}
	out := d.must(t, "submit", "shop", "create_table", "--wait", "--json",
		"--args", `{"table":"orders","columns":[{"name":"id","type":"BIGINT"},{"name":"item","type":"VARCHAR"}],"primary_key":["id"]}`)
	n := decodeNotification(t, out)
	if n.Status != "applied" || n.Version < 1 || n.Function != "create_table" || n.Model != "shop" || n.RequestID == "" {
		t.Fatalf("create_table notification %+v", n)
	}
	csv := filepath.Join(t.TempDir(), "orders.csv")
	os.WriteFile(csv, []byte("id,item\n1,tea\n2,cup\n3,pot\n"), 0o644)
	n = decodeNotification(t, d.must(t, "append", "shop", "orders", csv, "--wait", "--json"))
	if n.Status != "applied" {
		t.Fatalf("append: %+v", n)
	}
	// Rows given inline, with a request id chosen by the client.
	rows := filepath.Join(t.TempDir(), "rows.ndjson")
	os.WriteFile(rows, []byte(`{"id":4,"item":"saucer"}`+"\n"), 0o644)
	d.must(t, "submit", "shop", "append", "--args", `{"table":"orders"}`, "--rows", rows, "--id", "my-id-1", "--wait")
	status := d.must(t, "status", "my-id-1", "--json")
	if !strings.Contains(status, `"applied"`) {
		t.Errorf("status my-id-1: %s", status)
	}

	// Bad input: each refused with a clear message and its exit code.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"model", "create", "Bad.Name"}, 2, "DNS label"},
		{[]string{"submit", "shop", "explode", "--args", "{}"}, 2, "unknown function"},
		{[]string{"submit", "shop", "append", "--args", "[1]"}, 2, "JSON object"},
		{[]string{"submit", "shop", "append", "--args", `{"table":"orders","rows":[{"id":"x"}]}`, "--wait"}, 3, "failed"},
		{[]string{"submit", "nosuchmodel", "append", "--args", `{"table":"t","rows":[{"a":1}]}`, "--wait"}, 4, "does not exist"},
		// A request id is one request's: a retry is fine, another request under it is not.
		{[]string{"submit", "shop", "append", "--args", `{"table":"orders"}`, "--rows", rows, "--id", "my-id-1", "--wait"}, 0, ""},
		{[]string{"submit", "shop", "append", "--args", `{"table":"orders","rows":[{"id":5,"item":"lid"}]}`, "--id", "my-id-1"}, 2, "request id my-id-1 is already used by model shop function append"},
		{[]string{"submit", "other", "append", "--args", `{"table":"orders"}`, "--rows", rows, "--id", "my-id-1", "--wait"}, 2, "request id my-id-1 is already used by model shop function append"},
	} {
		out, errOut, code := d.teactl(t, tc.args...)
		if code != tc.code || !strings.Contains(strings.ToLower(errOut), strings.ToLower(tc.msg)) {
			t.Errorf("teactl %s: exit %d, stderr %q; want exit %d and %q (stdout %q)", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg, out)
		}
	}
	before := modelVersion(t, d)
	if before < 3 {
		t.Fatalf("current version %d after three applied requests", before)
	}
	d.stop(t)

	d = startDev(t, dir)
	if v := modelVersion(t, d); v != before {
		t.Fatalf("after restart current version %d, want %d", v, before)
	}
	n = decodeNotification(t, d.must(t, "submit", "shop", "delete", "--wait", "--json", "--args", `{"table":"orders","where":[{"column":"id","op":"=","value":2}]}`))
	if n.Status != "applied" || n.Version <= before {
		t.Fatalf("delete after restart: %+v, want a version after %d", n, before)
	}
	d.stop(t)
}

type notification struct {
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
	Function  string `json:"function"`
	Status    string `json:"status"`
	Version   int64  `json:"version"`
	Error     string `json:"error"`
}

func decodeNotification(t *testing.T, out string) notification {
	t.Helper()
	var n notification
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("not a JSON notification: %q: %v", out, err)
	}
	return n
}

func modelVersion(t *testing.T, d *devStack) int64 {
	t.Helper()
	var m struct {
		CurrentVersion int64 `json:"current_version"`
	}
	if err := json.Unmarshal([]byte(d.must(t, "model", "show", "shop", "--json")), &m); err != nil {
		t.Fatal(err)
	}
	return m.CurrentVersion
}
