package functions

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/model"
)

// TestValidateRequestPayloadBinding: a request may reference only a
// payload staged under staging/<its model>/<its request id>/; another
// model's, another request's (even one whose id starts like its own), a
// key of the old staging/<request_id>/ form and keys that climb out are
// refused, with a message naming the expected prefix.
func TestValidateRequestPayloadBinding(t *testing.T) {
	req := func(uri string) model.Request {
		return model.Request{ID: "r1", Model: "m7", Function: "append",
			Args: json.RawMessage(`{"table":"t","payload":{"uri":` + mustString(uri) + `}}`)}
	}
	for _, ok := range []string{"staging/m7/r1/zipcodes.csv", "staging/m7/r1/sub/dir/f.parquet", "staging/m7/r1/.hidden.csv"} {
		if err := ValidateRequest(req(ok), false); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, tc := range []struct{ uri, want string }{
		{"staging/m8/r1/zipcodes.csv", "not staged for this request: a request may use only objects under staging/m7/r1/"},
		{"staging/m7/r2/zipcodes.csv", "not staged for this request"},
		{"staging/m7/r10/zipcodes.csv", "not staged for this request"},
		{"staging/m7/r/zipcodes.csv", "not staged for this request"},
		{"staging/r1/zipcodes.csv", "not staged for this request"},
		{"staging/m7/zipcodes.csv", "not staged for this request"},
		{"staging/m7/r1.csv", "not staged for this request"},
		{"staging/M7/r1/zipcodes.csv", "not staged for this request"},
		{"staging/m7/r1/../r2/zipcodes.csv", "clean object key"},
		{"staging/m7/r1/./zipcodes.csv", "clean object key"},
		{"staging/m7/r1//zipcodes.csv", "clean object key"},
		{"staging/m7/r1/", "clean object key"},
		{"models/m7/tables/t/x.parquet", "must be a staged object"},
	} {
		err := ValidateRequest(req(tc.uri), false)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalid containing %q", tc.uri, err, tc.want)
		}
	}
	// The request's own id and model make the prefix: the same key is
	// fine for the request that staged it.
	r := req("staging/m8/r2/zipcodes.csv")
	r.Model, r.ID = "m8", "r2"
	if err := ValidateRequest(r, false); err != nil {
		t.Errorf("own payload: %v", err)
	}
}

// TestPayloadErrorsOneLine: a staged file that is not what its extension
// (or format) says fails with one line that names the file, says what it
// is not and what to do, without the server's paths or DuckDB's advice;
// DuckDB's full error stays in the chain for the db-manager's log.
func TestPayloadErrorsOneLine(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}`)
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91h6\x00\x00\x00\x00IEND\xaeB`\x82")
	m.copyTo("staging/m/r/real.parquet", `SELECT 1::BIGINT AS id, 'a' AS v`, "FORMAT parquet")
	m.put("staging/m/r/f.parquet", []byte("id,v\n1,a\n2,b\n"))
	m.put("staging/m/r/image.csv", png)
	m.put("staging/m/r/ragged.csv", []byte("id,v\n1,a\n2,b,c\n"))
	m.put("staging/m/r/f.json", []byte("id,v\n1,a\n"))
	m.put("staging/m/r/values.csv", []byte("id,v\nnot a number,a\n"))
	for _, tc := range []struct{ args, want string }{
		{`{"table":"t","payload":{"uri":"staging/m/r/f.parquet"}}`, `staged file "f.parquet" is not a valid Parquet file (format from its extension): No magic bytes found at end of file 'f.parquet'; check the file or pass its real format (teactl append --format)`},
		{`{"table":"new","payload":{"uri":"staging/m/r/f.parquet"}}`, `staged file "f.parquet" is not a valid Parquet file (format from its extension)`},
		{`{"table":"t","payload":{"uri":"staging/m/r/image.csv"}}`, `staged file "image.csv" is not a valid CSV file (format from its extension): no CSV dialect fits it`},
		{`{"table":"t","payload":{"uri":"staging/m/r/ragged.csv"}}`, `staged file "ragged.csv" is not a valid CSV file`},
		{`{"table":"t","payload":{"uri":"staging/m/r/f.json"}}`, `staged file "f.json" is not a valid JSON file (format from its extension): Malformed JSON`},
		{`{"table":"t","payload":{"uri":"staging/m/r/real.parquet","format":"csv"}}`, `staged file "real.parquet" is not a valid CSV file (format given by the request)`},
		{`{"table":"t","payload":{"uri":"staging/m/r/values.csv"}}`, `Could not convert string "not a number" to 'BIGINT'`},
	} {
		err := m.applyErr("append", tc.args, tc.want)
		msg := err.Error()
		if strings.ContainsAny(msg, "\r\n") || len(msg) > 600 {
			t.Errorf("%s: not one short line: %q", tc.args, msg)
		}
		for _, leak := range []string{m.staging, "Possible fixes", "Possible solutions", "LINE 1", "read_csv(", "sniffing"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: error holds %q: %s", tc.args, leak, msg)
			}
		}
		var de *duckdb.Error
		if !errors.As(err, &de) || !strings.Contains(de.Error(), m.staging) {
			t.Errorf("%s: DuckDB's detail (with the local path) is not in the chain: %v", tc.args, de)
		}
	}
	wantRows(t, m, `SELECT count(*) FROM t`, "0")
}

// FuzzValidateRequestPayload: a request ValidateRequest accepts references
// no payload, or one under its own model's and request's prefix.
func FuzzValidateRequestPayload(f *testing.F) {
	for _, s := range [][3]string{
		{"m7", "r1", "staging/m7/r1/f.csv"}, {"m7", "r1", "staging/m8/r1/f.csv"}, {"m7", "r1", "staging/m7/r1/../r2/f.csv"},
		{"m7", "..", "staging/m7/../f.csv"}, {"m7", "r1", "staging/r1/f.csv"}, {"m", "r", "staging/m/r/a/b.parquet"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, m, id, uri string) {
		r := model.Request{ID: id, Model: m, Function: "append", Args: json.RawMessage(`{"table":"t","payload":{"uri":` + mustString(uri) + `}}`)}
		err := ValidateRequest(r, false)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("%q: %v does not wrap ErrInvalid", uri, err)
			}
			return
		}
		pm, pid, ok := model.ParseStagedKey(uri)
		if !strings.HasPrefix(uri, model.StagingPrefix(m, id)) || !ok || pm != m || pid != id {
			t.Fatalf("request %q of model %q may use %q", id, m, uri)
		}
	})
}

// FuzzDuckGist: the gist of any DuckDB message is one line of bounded
// length without the local path.
func FuzzDuckGist(f *testing.F) {
	const local = "/data/models/m/staging/r1/f.csv"
	f.Add("Invalid Input Error: Error when sniffing file \"" + local + "\".\nIt was not possible\n\nPossible fixes:\n* x")
	f.Add("Conversion Error: CSV Error on Line: 2\nOriginal Line: 2,b,x\nError when converting column \"n\".\n\n  file = " + local)
	f.Add("")
	f.Fuzz(func(t *testing.T, msg string) {
		g := duckGist(msg, local, "f.csv")
		if strings.ContainsFunc(g, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(g) > maxGist+len("…") {
			t.Fatalf("gist %q of %q is not one short line", g, msg)
		}
		if strings.Contains(g, local) {
			t.Fatalf("gist %q holds the local path", g)
		}
	})
}
