package dbmanager

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strings"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// sourceEnvPrefix starts the environment variables that name a Postgres
// source: TEATREE_SOURCE_CRM=postgres://… is source "crm".
const sourceEnvPrefix = "TEATREE_SOURCE_"

// loadSources fills c.Sources from c.SourcesFile and environ (KEY=value
// pairs). Sources are configured here, on the db-manager, and nowhere
// else: a request names a source, never a DSN, so that credentials stay
// in the db-manager's environment or mounted secret and a request cannot
// point the db-manager at an arbitrary server.
//
// The file holds one source per line, name=DSN, or model/name=DSN for the
// model of that name only (blank lines and lines starting with # are
// skipped), or one JSON object of the same keys. Names are lower-case
// (functions.ValidSourceName); an environment variable's name is
// lower-cased.
func (c *Config) loadSources(environ []string) error {
	merged := map[string]string{}
	if c.SourcesFile != "" {
		fromFile, err := readSources(c.SourcesFile, c.Model)
		if err != nil {
			return err
		}
		maps.Copy(merged, fromFile)
	}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, sourceEnvPrefix) || v == "" {
			continue
		}
		name := strings.ToLower(strings.TrimPrefix(k, sourceEnvPrefix))
		if !functions.ValidSourceName(name) {
			return fmt.Errorf("%w: $%s: %q is not a source name (lower-case letters, digits and '_', starting with a letter)", model.ErrInvalid, k, name)
		}
		merged[name] = v
	}
	maps.Copy(merged, c.Sources)
	c.Sources = merged
	return nil
}

// readSources reads a sources file for model mdl.
func readSources(path, mdl string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--sources: %w", err)
	}
	entries := map[string]string{}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		if err := json.Unmarshal(t, &entries); err != nil {
			return nil, fmt.Errorf("%w: --sources %s: %v", model.ErrInvalid, path, err)
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%w: --sources %s: line %d is not name=DSN", model.ErrInvalid, path, n)
			}
			entries[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--sources %s: %w", path, err)
		}
	}
	global, own := map[string]string{}, map[string]string{}
	for k, v := range entries {
		into, name := global, k
		if m, n, scoped := strings.Cut(k, "/"); scoped {
			if m != mdl {
				continue
			}
			into, name = own, n
		}
		if !functions.ValidSourceName(name) {
			return nil, fmt.Errorf("%w: --sources %s: %q is not a source name (lower-case letters, digits and '_', starting with a letter)", model.ErrInvalid, path, name)
		}
		into[name] = v
	}
	maps.Copy(global, own) // the model's own entry wins
	return global, nil
}
