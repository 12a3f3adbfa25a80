package dbmanager

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/model"
)

// TestSourcesConfig: sources come from the file (global and this model's
// entries, the model's winning; lines or JSON), then the environment
// (TEATREE_SOURCE_<NAME>, lower-cased), then Config.Sources; bad names are
// refused at start.
func TestSourcesConfig(t *testing.T) {
	dir := t.TempDir()
	lines := filepath.Join(dir, "sources")
	os.WriteFile(lines, []byte("# sources\ncrm = postgres://crm/db\nshop/crm=postgres://shop-crm/db\nother/erp=postgres://other/erp\n\nbilling=postgres://billing/db\n"), 0o600)
	asJSON := filepath.Join(dir, "sources.json")
	os.WriteFile(asJSON, []byte(`{"crm":"postgres://crm/db","shop/erp":"postgres://erp/db"}`), 0o600)
	for _, tc := range []struct {
		file    string
		environ []string
		given   map[string]string
		want    map[string]string
	}{
		{lines, nil, nil, map[string]string{"crm": "postgres://shop-crm/db", "billing": "postgres://billing/db"}},
		{asJSON, nil, nil, map[string]string{"crm": "postgres://crm/db", "erp": "postgres://erp/db"}},
		{lines, []string{"TEATREE_SOURCE_BILLING=postgres://env/db", "TEATREE_SOURCES=x", "PATH=/bin"}, map[string]string{"crm": "postgres://given/db"},
			map[string]string{"crm": "postgres://given/db", "billing": "postgres://env/db"}},
		{"", []string{"TEATREE_SOURCE_CRM_EU=postgres://eu/db"}, nil, map[string]string{"crm_eu": "postgres://eu/db"}},
	} {
		c := Config{Model: "shop", SourcesFile: tc.file, Sources: tc.given}
		if err := c.loadSources(tc.environ); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, c.Sources); diff != "" {
			t.Errorf("%s %v: (-want +got)\n%s", tc.file, tc.environ, diff)
		}
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("Bad-Name=postgres://x\n"), 0o600)
	for _, c := range []struct {
		cfg     Config
		environ []string
	}{
		{Config{Model: "shop", SourcesFile: bad}, nil},
		{Config{Model: "shop"}, []string{"TEATREE_SOURCE_9X=postgres://x"}},
	} {
		if err := c.cfg.loadSources(c.environ); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "is not a source name") {
			t.Errorf("%+v: %v, want a refused source name", c, err)
		}
	}
}
