package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/profile"
)

func init() {
	extraCommands = append(extraCommands, profileCmd)
}

// tableProfile is what `teactl profile --json` prints for one table.
type tableProfile struct {
	Name  string `json:"name"`
	Rows  int64  `json:"rows"`
	Files int    `json:"files"`
	// Error says why the table has no profile (a data file without one),
	// with Columns empty.
	Error   string          `json:"error,omitempty"`
	Columns []columnProfile `json:"columns"`

	merged *profile.Profile
}

type columnProfile struct {
	Name      string  `json:"name"`
	Type      string  `json:"type"`
	Rows      int64   `json:"rows"`
	Nulls     int64   `json:"nulls"`
	NullShare float64 `json:"null_share"` // nulls / rows, 0 for no rows
	// Distinct is the HyperLogLog estimate of the distinct non-null
	// values (relative standard error distinct_error); absent for nested
	// types.
	Distinct      *uint64    `json:"distinct,omitempty"`
	DistinctError float64    `json:"distinct_error,omitempty"`
	Min           *string    `json:"min,omitempty"` // DuckDB's text of the value
	Max           *string    `json:"max,omitempty"`
	Top           []topValue `json:"top,omitempty"`
}

// topValue is a frequent value with its count: Count is an upper bound
// (exact when Exact), Low a lower bound.
type topValue struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
	Low   int64  `json:"low"`
	Exact bool   `json:"exact"`
}

type versionProfile struct {
	Model   string         `json:"model"`
	Version int64          `json:"version"`
	Tables  []tableProfile `json:"tables"`
}

// modelVersion is one model's version in a merged profile.
type modelVersion struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
}

// mergedProfile is what `teactl profile M1,M2 TABLE --json` prints: the
// profile of table over the rows of every listed version.
type mergedProfile struct {
	Models []modelVersion `json:"models"`
	Table  tableProfile   `json:"table"`
}

func profileCmd(e *env) *cobra.Command {
	var version int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "profile MODEL[,MODEL…] [TABLE]",
		Short: "print the column profiles of a version's tables (or of one table merged across models): nulls, distinct values, min, max, most frequent values",
		Long: `profile prints, for each table of a version (default: the latest) and each
column: rows, nulls (and their share), the approximate number of distinct
values (HyperLogLog, relative standard error 0.81 %), min, max and the 10 most
frequent values with their counts (~ before a count that is an upper bound,
within 0.27 % of the column's rows with probability 98 %; exact otherwise).

Every Parquet data file of a version has a profile of its rows, computed when
the file is written; a table's profile is the merge of its files' profiles. A
file written before profiles (or whose profiling failed) has none: the table
then says "no profile for file X".

Several models, comma-separated (MODEL@N for version N of that model, else its
latest), merge the profiles of TABLE (required then) in all their versions:
the profile of the union of their rows, as if one table held them all (rows
and nulls summed, min and max over all, distinct values and frequent values
from the merged sketches, with the same error bounds). The table must have
the same columns (names, types, order) in every model.

--json prints model, version, tables[{name, rows, files, error, columns[{name,
type, rows, nulls, null_share, distinct, distinct_error, min, max,
top[{value, count, low, exact}]}]}]; for several models models[{model,
version}], table{…} (one table as above).`,
		Example: `  teactl profile flights
  teactl profile flights flights --version 12 --json
  teactl profile flights-east,flights-west@7 flights`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			specs, err := parseModelVersions(args[0], version)
			if err != nil {
				return err
			}
			table := ""
			if len(args) == 2 {
				table = args[1]
			}
			if len(specs) > 1 && table == "" {
				return fmt.Errorf("%w: profile of several models (%s) merges one table: name it (teactl profile %s TABLE)", model.ErrInvalid, args[0], args[0])
			}
			return e.with(true, true, func(d *session) error {
				if len(specs) > 1 {
					mp, err := mergeProfiles(cmd.Context(), d.client, d.Store, specs, table)
					if err != nil {
						return err
					}
					if asJSON {
						return e.printJSON(mp)
					}
					return writeMerged(e.stdout, mp)
				}
				v, err := d.client.Version(cmd.Context(), specs[0].Model, specs[0].Version)
				if err != nil {
					return err
				}
				vp, err := profileOf(cmd.Context(), d.Store, v, table)
				if err != nil {
					return err
				}
				if table != "" && vp.Tables[0].Error != "" {
					return fmt.Errorf("%s version %d table %s: %s", v.Model, v.Version, table, vp.Tables[0].Error)
				}
				if asJSON {
					return e.printJSON(vp)
				}
				return writeProfile(e.stdout, vp)
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to profile (default: the latest); one model only (several: MODEL@N)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// parseModelVersions reads "m1,m2@7,…": model ids, each optionally with
// @N, a version (0: the latest). version is --version: allowed with one
// model only.
func parseModelVersions(arg string, version int64) ([]modelVersion, error) {
	parts := strings.Split(arg, ",")
	seen := map[modelVersion]bool{}
	var out []modelVersion
	for _, p := range parts {
		name, v, err := modelAt(strings.TrimSpace(p), version, version != 0)
		if err != nil {
			return nil, fmt.Errorf("profile: %w", err)
		}
		mv := modelVersion{Model: name, Version: v}
		if err := model.ValidateID(name); err != nil {
			return nil, fmt.Errorf("%w: profile: %q in %q: %v", model.ErrInvalid, name, arg, err)
		}
		if seen[mv] {
			return nil, fmt.Errorf("%w: profile: %q is listed twice in %q: its rows would count twice", model.ErrInvalid, p, arg)
		}
		seen[mv] = true
		out = append(out, mv)
	}
	if len(out) > 1 && version != 0 {
		return nil, fmt.Errorf("%w: profile: --version takes one model; give each model's version as MODEL@N", model.ErrInvalid)
	}
	return out, nil
}

// mergeProfiles loads table's profile in each of the versions specs (0:
// the model's latest) and merges them. A model without the table, a
// table without a profile or with other columns than the first model's is
// an error naming the model.
func mergeProfiles(ctx context.Context, c *client.Client, store objstore.Store, specs []modelVersion, table string) (mergedProfile, error) {
	mp := mergedProfile{}
	var ps []*profile.Profile
	var files int
	for _, s := range specs {
		v, err := c.Version(ctx, s.Model, s.Version)
		if err != nil {
			return mp, err
		}
		vp, err := profileOf(ctx, store, v, table)
		if err != nil {
			return mp, err
		}
		tp := vp.Tables[0]
		if tp.Error != "" {
			return mp, fmt.Errorf("%s version %d table %s: %s", v.Model, v.Version, table, tp.Error)
		}
		if len(ps) > 0 {
			if err := sameColumns(ps[0], tp.merged); err != nil {
				return mp, fmt.Errorf("%w: profile: table %s of %s version %d and of %s version %d: %v; only a table of the same columns merges",
					model.ErrInvalid, table, mp.Models[0].Model, mp.Models[0].Version, v.Model, v.Version, err)
			}
		}
		mp.Models = append(mp.Models, modelVersion{Model: v.Model, Version: v.Version})
		ps = append(ps, tp.merged)
		files += tp.Files
	}
	p, err := profile.MergeAll(ps)
	if err != nil {
		return mp, err
	}
	mp.Table = tableProfile{Name: table, Rows: p.Rows, Files: files, Columns: columnsOf(p), merged: p}
	return mp, nil
}

// sameColumns reports how b's columns differ from a's (nil: the same
// names and types in the same order).
func sameColumns(a, b *profile.Profile) error {
	desc := func(p *profile.Profile) string {
		cols := make([]string, len(p.Columns))
		for i, c := range p.Columns {
			cols[i] = c.Name + " " + c.Type
		}
		return strings.Join(cols, ", ")
	}
	if da, db := desc(a), desc(b); da != db {
		return fmt.Errorf("columns (%s) and (%s)", da, db)
	}
	return nil
}

// profileOf loads and merges the profiles of the data files of v's
// tables (or only table's). A table without a profile has Error set; a
// table v lacks is model.ErrNotFound.
func profileOf(ctx context.Context, store objstore.Store, v controldb.Version, table string) (versionProfile, error) {
	vp := versionProfile{Model: v.Model, Version: v.Version, Tables: []tableProfile{}}
	for _, t := range v.Tables {
		if table != "" && t.Name != table {
			continue
		}
		tp := tableProfile{Name: t.Name, Rows: t.Rows, Files: len(t.Files), Columns: []columnProfile{}}
		files, err := client.DataFiles(v, t)
		if err != nil {
			tp.Error = err.Error()
			vp.Tables = append(vp.Tables, tp)
			continue
		}
		shas := make([]string, len(files))
		for i, f := range files {
			shas[i] = f.SHA256
		}
		p, err := profile.Load(ctx, store, v.BlockNamespace(), t.Name, shas)
		if err != nil {
			tp.Error = strings.TrimPrefix(err.Error(), "profile: ")
			vp.Tables = append(vp.Tables, tp)
			continue
		}
		tp.merged, tp.Columns = p, columnsOf(p)
		vp.Tables = append(vp.Tables, tp)
	}
	if table != "" && len(vp.Tables) == 0 {
		names := make([]string, len(v.Tables))
		for i, t := range v.Tables {
			names[i] = t.Name
		}
		return vp, fmt.Errorf("%w: %s version %d has no table %q (its tables: %s)", model.ErrNotFound, v.Model, v.Version, table, strings.Join(names, ", "))
	}
	return vp, nil
}

// columnsOf is what profile prints of p's columns.
func columnsOf(p *profile.Profile) []columnProfile {
	out := []columnProfile{}
	for _, c := range p.Columns {
		cp := columnProfile{Name: c.Name, Type: c.Type, Rows: p.Rows, Nulls: c.Nulls}
		if p.Rows > 0 {
			cp.NullShare = float64(c.Nulls) / float64(p.Rows)
		}
		if c.Sketched() {
			n := c.Distinct()
			cp.Distinct, cp.DistinctError = &n, profile.StdError
		}
		if c.Min != nil {
			cp.Min, cp.Max = &c.Min.Text, &c.Max.Text
		}
		for _, tv := range c.TopValues() {
			cp.Top = append(cp.Top, topValue{Value: tv.Text, Count: tv.High, Low: tv.Low, Exact: tv.Low == tv.High})
		}
		out = append(out, cp)
	}
	return out
}

// writeMerged prints mp: a line naming the versions merged, then a row per
// column.
func writeMerged(w io.Writer, mp mergedProfile) error {
	names := make([]string, len(mp.Models))
	for i, m := range mp.Models {
		names[i] = fmt.Sprintf("%s version %d", m.Model, m.Version)
	}
	fmt.Fprintf(w, "table %s merged over %s: %s in %s\n", mp.Table.Name, strings.Join(names, ", "), plural(mp.Table.Rows, "row"), plural(mp.Table.Files, "file"))
	return writeColumns(w, mp.Table.Columns)
}

// writeProfile prints vp: per table a line, then a row per column.
func writeProfile(w io.Writer, vp versionProfile) error {
	for i, t := range vp.Tables {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s version %d table %s: %s in %s\n", vp.Model, vp.Version, t.Name, plural(t.Rows, "row"), plural(t.Files, "file"))
		if t.Error != "" {
			fmt.Fprintf(w, "  %s\n", t.Error)
			continue
		}
		if err := writeColumns(w, t.Columns); err != nil {
			return err
		}
	}
	return nil
}

// writeColumns prints a row per column.
func writeColumns(w io.Writer, cols []columnProfile) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLUMN\tTYPE\tNULLS\tNULL%\tDISTINCT\tMIN\tMAX\tTOP VALUES")
	for _, c := range cols {
		distinct, lo, hi := "-", "-", "-"
		if c.Distinct != nil {
			distinct = "~" + strconv.FormatUint(*c.Distinct, 10)
		}
		if c.Min != nil {
			lo, hi = short(*c.Min), short(*c.Max)
		}
		top := make([]string, len(c.Top))
		for j, v := range c.Top {
			n := strconv.FormatInt(v.Count, 10)
			if !v.Exact {
				n = "~" + n
			}
			top[j] = short(v.Value) + " (" + n + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f%%\t%s\t%s\t%s\t%s\n", c.Name, c.Type, c.Nulls, 100*c.NullShare, distinct, lo, hi, strings.Join(top, ", "))
	}
	return tw.Flush()
}

// short is s cut to 32 characters (with …), tabs and newlines as spaces.
func short(s string) string {
	s = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
	if r := []rune(s); len(r) > 32 {
		return string(r[:31]) + "…"
	}
	return s
}

// columnDiff is how a column's profile changed from version A to B (a
// column in both): the fields set are those that changed.
type columnDiff struct {
	Column        string   `json:"column"`
	NullShareFrom *float64 `json:"null_share_from,omitempty"`
	NullShareTo   *float64 `json:"null_share_to,omitempty"`
	DistinctFrom  *uint64  `json:"distinct_from,omitempty"` // approximate
	DistinctTo    *uint64  `json:"distinct_to,omitempty"`
	MinFrom       *string  `json:"min_from,omitempty"`
	MinTo         *string  `json:"min_to,omitempty"`
	MaxFrom       *string  `json:"max_from,omitempty"`
	MaxTo         *string  `json:"max_to,omitempty"`
	TopEntered    []string `json:"top_entered,omitempty"` // values in B's top 10, not A's
	TopLeft       []string `json:"top_left,omitempty"`    // values in A's top 10, not B's
}

// profileDiff is added to each row of `teactl diff --json` (beside
// snapshot.TableDiff's fields): the profile changes of the columns in both versions (profiles_error
// when a version's table has no profile).
type profileDiff struct {
	Columns []columnDiff `json:"columns_profile,omitempty"`
	Error   string       `json:"profiles_error,omitempty"`
}

// diffProfiles compares the column profiles of table in a and b (tables
// in both versions).
func diffProfiles(a, b tableProfile) profileDiff {
	switch {
	case a.Error != "":
		return profileDiff{Error: a.Error}
	case b.Error != "":
		return profileDiff{Error: b.Error}
	}
	from := map[string]columnProfile{}
	for _, c := range a.Columns {
		from[c.Name] = c
	}
	var out profileDiff
	for _, cb := range b.Columns {
		ca, ok := from[cb.Name]
		if !ok {
			continue
		}
		d := columnDiff{Column: cb.Name}
		changed := false
		// A share moving by less than 0.05 percentage points is not shown.
		if math.Abs(ca.NullShare-cb.NullShare) >= 0.0005 {
			d.NullShareFrom, d.NullShareTo, changed = &ca.NullShare, &cb.NullShare, true
		}
		if ca.Distinct != nil && cb.Distinct != nil && *ca.Distinct != *cb.Distinct {
			d.DistinctFrom, d.DistinctTo, changed = ca.Distinct, cb.Distinct, true
		}
		if text(ca.Min) != text(cb.Min) {
			d.MinFrom, d.MinTo, changed = ca.Min, cb.Min, true
		}
		if text(ca.Max) != text(cb.Max) {
			d.MaxFrom, d.MaxTo, changed = ca.Max, cb.Max, true
		}
		d.TopEntered, d.TopLeft = topChanges(ca.Top, cb.Top)
		if changed || d.TopEntered != nil || d.TopLeft != nil {
			out.Columns = append(out.Columns, d)
		}
	}
	return out
}

func text(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// topChanges returns the values of b's top not in a's, and of a's not in b's.
func topChanges(a, b []topValue) (entered, left []string) {
	in := func(vs []topValue, s string) bool {
		for _, v := range vs {
			if v.Value == s {
				return true
			}
		}
		return false
	}
	for _, v := range b {
		if !in(a, v.Value) {
			entered = append(entered, v.Value)
		}
	}
	for _, v := range a {
		if !in(b, v.Value) {
			left = append(left, v.Value)
		}
	}
	return entered, left
}

// String is d in one line: "nulls 0.0% → 20.0%, distinct ~4 → ~5, …".
func (d columnDiff) String() string {
	var parts []string
	if d.NullShareFrom != nil {
		parts = append(parts, fmt.Sprintf("nulls %.1f%% → %.1f%%", 100**d.NullShareFrom, 100**d.NullShareTo))
	}
	if d.DistinctFrom != nil {
		parts = append(parts, fmt.Sprintf("distinct ~%d → ~%d", *d.DistinctFrom, *d.DistinctTo))
	}
	if d.MinFrom != nil || d.MinTo != nil {
		parts = append(parts, "min "+short(text(d.MinFrom))+" → "+short(text(d.MinTo)))
	}
	if d.MaxFrom != nil || d.MaxTo != nil {
		parts = append(parts, "max "+short(text(d.MaxFrom))+" → "+short(text(d.MaxTo)))
	}
	quote := func(vs []string) string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = short(v)
		}
		return strings.Join(out, ", ")
	}
	if d.TopEntered != nil {
		parts = append(parts, "top entered: "+quote(d.TopEntered))
	}
	if d.TopLeft != nil {
		parts = append(parts, "top left: "+quote(d.TopLeft))
	}
	return strings.Join(parts, "; ")
}
