// Package profile computes column profiles of a table's rows in bounded
// memory and merges them: per column the rows, nulls, min and max, an
// approximate distinct count (HyperLogLog) and the most frequent values
// (exact candidates bounded by a count-min sketch).
//
// A profile is built per Parquet data file of a version's archive, from the
// same rows (Build with the file's rowid predicate), and stored next to it
// (snapshot.ProfileKey). A table's profile at a version is the Merge of its
// files' profiles, so an append profiles only the appended rows.
//
// Sketch parameters (docs/decisions.md):
//
//   - Distinct: HyperLogLog with 2^Precision = 16,384 registers (dense,
//     github.com/axiomhq/hyperloglog), fed with DuckDB's 64-bit hash(col):
//     relative standard error 1.04/sqrt(2^14) ≈ 0.81 %. Merging is a
//     register-wise max, so the merge of the files' sketches is the sketch of
//     the whole table.
//   - Frequent values: every file lists its Candidates most frequent values
//     with their exact counts (DuckDB's GROUP BY), an upper bound on the count
//     of any value it does not list, and a count-min sketch of all its
//     values' counts (Width × Depth counters; ε = e/Width ≈ 0.27 % of the
//     column's non-null rows, δ = e^-Depth ≈ 1.8 %). A merged candidate
//     carries a lower bound (the counts of the files that list it) and an
//     upper bound (plus the bound of every file that does not), the upper
//     bound capped by the merged sketch's estimate (never below the true
//     count, above it by at most ε·N with probability 1-δ). Counts are
//     exact when every file lists the value or has fewer distinct values
//     than Candidates.
//   - Min and max: DuckDB's min and max as text, with for temporal types
//     the microseconds since the epoch as the comparable form; merging
//     compares integers and decimals as exact rationals, floats as floats
//     (NaN greatest, as in DuckDB), temporal values by their microseconds
//     and then text, anything else as text byte-wise (DuckDB's order for
//     VARCHAR; for BLOB and UUID the text order, which may differ).
//     Nested types (LIST, STRUCT, MAP, UNION, ARRAY, VARIANT) get rows and
//     nulls only.
//
// Memory per column is independent of the row count: 16 KiB of registers,
// Width·Depth·8 = 32 KiB of counters and at most Candidates values.
package profile

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/axiomhq/hyperloglog"
	"github.com/klauspost/compress/zstd"
)

const (
	// Precision is the HyperLogLog precision p: 2^p registers, relative
	// standard error 1.04/sqrt(2^p).
	Precision = 14
	// TopK is the number of most frequent values a profile shows.
	TopK = 10
	// Candidates is the number of most frequent values a profile keeps
	// (exact per file), more than TopK so that merged top values are
	// rarely missed.
	Candidates = 2 * TopK
	// Width and Depth are the count-min sketch's counters per row and rows.
	Width = 1024
	Depth = 4
)

// StdError is the HyperLogLog's relative standard error, 1.04/sqrt(2^Precision).
var StdError = 1.04 / math.Sqrt(float64(uint64(1)<<Precision))

// Epsilon and Delta are the count-min sketch's error bounds: an estimate
// exceeds the true count by more than Epsilon times the column's non-null
// rows with probability at most Delta.
var (
	Epsilon = math.E / Width
	Delta   = math.Exp(-Depth)
)

// Profile is the profile of some rows of a table.
type Profile struct {
	Rows    int64     // rows profiled
	Columns []*Column // in the table's order
}

// Column is the profile of one column.
type Column struct {
	Name  string
	Type  string // DuckDB type
	Nulls int64
	// Min and Max are nil when the column has no non-null value or its
	// type is nested.
	Min, Max *Bound
	// Top are the candidates for the most frequent values, most frequent
	// (by High) first, at most Candidates; Others bounds the count of any
	// value not listed. Empty for nested types.
	Top    []Value
	Others int64

	distinct *hyperloglog.Sketch // nil for nested types
	cms      *countMin           // nil for nested types
}

// Bound is a min or max: DuckDB's text of the value and, for temporal
// types, its microseconds since the epoch (Micros, set when HasMicros).
type Bound struct {
	Text      string
	Micros    int64
	HasMicros bool
}

// Value is a frequent value: its DuckDB text, its DuckDB hash and bounds
// on its count, Low ≤ true count ≤ High (equal when exact).
type Value struct {
	Text string
	Hash uint64
	Low  int64
	High int64
}

// Distinct is the approximate number of distinct non-null values (0 for
// nested types, which are not sketched).
func (c *Column) Distinct() uint64 {
	if c.distinct == nil {
		return 0
	}
	return c.distinct.Estimate()
}

// Sketched reports whether the column has distinct and frequent-value
// sketches (not a nested type).
func (c *Column) Sketched() bool { return c.distinct != nil }

// TopValues returns the TopK most frequent values.
func (c *Column) TopValues() []Value {
	return c.Top[:min(len(c.Top), TopK)]
}

// kind is how min and max of a type compare when merging.
type kind int

const (
	kindText kind = iota
	kindNumber
	kindFloat
	kindTime
	kindNested
)

func kindOf(typ string) kind {
	t := strings.ToUpper(strings.TrimSpace(typ))
	switch {
	case strings.ContainsAny(t, "[(") && !strings.HasPrefix(t, "DECIMAL") && !strings.HasPrefix(t, "NUMERIC") && !strings.HasPrefix(t, "ENUM"),
		strings.HasPrefix(t, "VARIANT"):
		return kindNested
	case strings.HasPrefix(t, "DECIMAL"), strings.HasPrefix(t, "NUMERIC"):
		return kindNumber
	}
	switch t {
	case "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "INT", "INT1", "INT2", "INT4", "INT8", "INT16":
		return kindNumber
	case "FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8":
		return kindFloat
	case "DATE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "DATETIME":
		return kindTime
	}
	return kindText
}

// newColumn returns an empty column profile of the given type.
func newColumn(name, typ string) *Column {
	c := &Column{Name: name, Type: typ}
	if kindOf(typ) != kindNested {
		c.distinct, _ = hyperloglog.NewSketch(Precision, false)
		c.cms = newCountMin()
	}
	return c
}

// compare orders two bounds of a column of kind k: negative when a < b.
func compare(k kind, a, b *Bound) int {
	switch k {
	case kindNumber:
		x, okx := new(big.Rat).SetString(a.Text)
		y, oky := new(big.Rat).SetString(b.Text)
		if okx && oky {
			return x.Cmp(y)
		}
	case kindFloat:
		x, errx := strconv.ParseFloat(a.Text, 64)
		y, erry := strconv.ParseFloat(b.Text, 64)
		if errx == nil && erry == nil {
			switch {
			case math.IsNaN(x) && math.IsNaN(y):
				return 0
			case math.IsNaN(x):
				return 1
			case math.IsNaN(y):
				return -1
			}
			return cmp.Compare(x, y)
		}
	case kindTime:
		if a.HasMicros && b.HasMicros && a.Micros != b.Micros {
			return cmp.Compare(a.Micros, b.Micros)
		}
	}
	return strings.Compare(a.Text, b.Text)
}

// Merge returns the profile of the rows of a and b together. Both must be
// profiles of the same table (the same column names and types).
func Merge(a, b *Profile) (*Profile, error) {
	if len(a.Columns) != len(b.Columns) {
		return nil, fmt.Errorf("profile: merge: %d columns and %d columns; profiles of one table's files must have the same columns", len(a.Columns), len(b.Columns))
	}
	out := &Profile{Rows: a.Rows + b.Rows}
	for i, ca := range a.Columns {
		cb := b.Columns[i]
		if ca.Name != cb.Name || ca.Type != cb.Type {
			return nil, fmt.Errorf("profile: merge: column %d is %s %s in one profile and %s %s in the other", i+1, ca.Name, ca.Type, cb.Name, cb.Type)
		}
		c, err := mergeColumn(ca, cb)
		if err != nil {
			return nil, err
		}
		out.Columns = append(out.Columns, c)
	}
	return out, nil
}

// MergeAll merges ps (at least one).
func MergeAll(ps []*Profile) (*Profile, error) {
	if len(ps) == 0 {
		return nil, errors.New("profile: nothing to merge")
	}
	out := ps[0]
	for _, p := range ps[1:] {
		var err error
		if out, err = Merge(out, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func mergeColumn(a, b *Column) (*Column, error) {
	k := kindOf(a.Type)
	c := &Column{Name: a.Name, Type: a.Type, Nulls: a.Nulls + b.Nulls}
	c.Min, c.Max = a.Min, a.Max
	if b.Min != nil && (c.Min == nil || compare(k, b.Min, c.Min) < 0) {
		c.Min = b.Min
	}
	if b.Max != nil && (c.Max == nil || compare(k, b.Max, c.Max) > 0) {
		c.Max = b.Max
	}
	if a.distinct == nil || b.distinct == nil {
		return c, nil
	}
	c.distinct = a.distinct.Clone()
	if err := c.distinct.Merge(b.distinct); err != nil {
		return nil, fmt.Errorf("profile: merge column %s: %w", a.Name, err)
	}
	c.cms = a.cms.clone()
	c.cms.add(b.cms)
	c.Top, c.Others = mergeTop(a, b, c.cms)
	return c, nil
}

// mergeTop merges the candidates of a and b: a value one side does not
// list may have up to that side's Others more rows; every upper bound is
// capped by the merged sketch's estimate.
func mergeTop(a, b *Column, cms *countMin) ([]Value, int64) {
	byText := map[string]*Value{}
	var all []*Value
	for _, v := range a.Top {
		x := v
		x.High += b.Others
		byText[v.Text] = &x
		all = append(all, &x)
	}
	for _, v := range b.Top {
		if x, ok := byText[v.Text]; ok {
			x.Low += v.Low
			x.High += v.High - b.Others
			continue
		}
		x := v
		x.High += a.Others
		byText[v.Text] = &x
		all = append(all, &x)
	}
	out := make([]Value, 0, len(all))
	for _, x := range all {
		x.High = max(x.Low, min(x.High, cms.estimate(x.Hash)))
		out = append(out, *x)
	}
	sortTop(out)
	others := a.Others + b.Others
	if len(out) > Candidates {
		others = max(others, out[Candidates].High)
		out = out[:Candidates]
	}
	return out, others
}

func sortTop(vs []Value) {
	slices.SortFunc(vs, func(x, y Value) int {
		if c := cmp.Compare(y.High, x.High); c != 0 {
			return c
		}
		return strings.Compare(x.Text, y.Text)
	})
}

// countMin is a count-min sketch over 64-bit hashes: row i counts a hash h
// in cell (lo32(h) + i·hi32(h)) mod Width (double hashing).
type countMin struct {
	cells []uint64 // Depth rows of Width
}

func newCountMin() *countMin { return &countMin{cells: make([]uint64, Width*Depth)} }

func cell(h uint64, i int) int {
	return int(((h & 0xffffffff) + uint64(i)*(h>>32)) % Width)
}

func (s *countMin) clone() *countMin { return &countMin{cells: slices.Clone(s.cells)} }

func (s *countMin) add(o *countMin) {
	for i, n := range o.cells {
		s.cells[i] += n
	}
}

func (s *countMin) estimate(h uint64) int64 {
	est := uint64(math.MaxInt64)
	for i := range Depth {
		est = min(est, s.cells[i*Width+cell(h, i)])
	}
	return int64(est)
}

// envelope is the stored form of a profile (JSON).
type envelope struct {
	Format    string        `json:"format"` // "teatree-profile"
	Version   int           `json:"version"`
	Precision int           `json:"hll_precision"`
	Width     int           `json:"cms_width"`
	Depth     int           `json:"cms_depth"`
	Rows      int64         `json:"rows"`
	Columns   []envelopeCol `json:"columns"`
}

type envelopeCol struct {
	Name   string  `json:"name"`
	Type   string  `json:"type"`
	Nulls  int64   `json:"nulls"`
	Min    *Bound  `json:"min,omitempty"`
	Max    *Bound  `json:"max,omitempty"`
	Top    []Value `json:"top,omitempty"`
	Others int64   `json:"others,omitempty"`
	HLL    []byte  `json:"hll,omitempty"` // the sketch's MarshalBinary
	CMS    []byte  `json:"cms,omitempty"` // Width·Depth counters, uvarints
}

const (
	formatName    = "teatree-profile"
	formatVersion = 1
)

// zstd coders, safe for concurrent EncodeAll and DecodeAll. The decoder
// refuses output over maxObject bytes.
var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxObject), zstd.WithDecoderMaxWindow(maxObject))
)

// zstdMagic starts a zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// MarshalBinary encodes p as a zstd-compressed JSON envelope (format
// "teatree-profile", version 1) holding the sketches' bytes: a sketch of
// few values is mostly zeros, so a one-row file's profile is a few hundred
// bytes a column instead of 27 KB.
func (p *Profile) MarshalBinary() ([]byte, error) {
	data, err := p.marshalJSON()
	if err != nil {
		return nil, err
	}
	return zenc.EncodeAll(data, nil), nil
}

func (p *Profile) marshalJSON() ([]byte, error) {
	e := envelope{Format: formatName, Version: formatVersion, Precision: Precision, Width: Width, Depth: Depth, Rows: p.Rows}
	for _, c := range p.Columns {
		ec := envelopeCol{Name: c.Name, Type: c.Type, Nulls: c.Nulls, Min: c.Min, Max: c.Max, Top: c.Top, Others: c.Others}
		if c.distinct != nil {
			var err error
			if ec.HLL, err = c.distinct.MarshalBinary(); err != nil {
				return nil, fmt.Errorf("profile: encode column %s: %w", c.Name, err)
			}
			for _, n := range c.cms.cells {
				ec.CMS = binary.AppendUvarint(ec.CMS, n)
			}
		}
		e.Columns = append(e.Columns, ec)
	}
	return json.Marshal(e)
}

// Decode reads a profile MarshalBinary wrote (or its JSON uncompressed),
// checking every field: it reads objects from the store, so it never
// trusts them.
func Decode(data []byte) (*Profile, error) {
	if bytes.HasPrefix(data, zstdMagic) {
		var err error
		if data, err = zdec.DecodeAll(data, nil); err != nil {
			return nil, fmt.Errorf("profile: decode: decompress: %w", err)
		}
	}
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("profile: decode: %w", err)
	}
	switch {
	case e.Format != formatName:
		return nil, fmt.Errorf("profile: decode: format %q, want %q", e.Format, formatName)
	case e.Version != formatVersion:
		return nil, fmt.Errorf("profile: decode: version %d, this teatree reads version %d; upgrade teatree", e.Version, formatVersion)
	case e.Precision != Precision || e.Width != Width || e.Depth != Depth:
		return nil, fmt.Errorf("profile: decode: sketch parameters p=%d, %d×%d; this teatree uses p=%d, %d×%d", e.Precision, e.Width, e.Depth, Precision, Width, Depth)
	case e.Rows < 0:
		return nil, fmt.Errorf("profile: decode: %d rows", e.Rows)
	}
	p := &Profile{Rows: e.Rows}
	for _, ec := range e.Columns {
		c := &Column{Name: ec.Name, Type: ec.Type, Nulls: ec.Nulls, Min: ec.Min, Max: ec.Max, Top: ec.Top, Others: ec.Others}
		if c.Nulls < 0 || c.Nulls > e.Rows || c.Others < 0 || len(c.Top) > Candidates {
			return nil, fmt.Errorf("profile: decode: column %q: bad counts (nulls %d of %d rows, others %d, %d candidates)", c.Name, c.Nulls, e.Rows, c.Others, len(c.Top))
		}
		for _, v := range c.Top {
			if v.Low < 0 || v.High < v.Low {
				return nil, fmt.Errorf("profile: decode: column %q: value %q has count bounds %d..%d", c.Name, v.Text, v.Low, v.High)
			}
		}
		nested := kindOf(c.Type) == kindNested
		if nested != (ec.HLL == nil) || nested != (ec.CMS == nil) {
			return nil, fmt.Errorf("profile: decode: column %q of type %s: sketches present for a nested type or missing for another", c.Name, c.Type)
		}
		if !nested {
			c.distinct, _ = hyperloglog.NewSketch(Precision, false)
			if err := c.distinct.UnmarshalBinary(ec.HLL); err != nil {
				return nil, fmt.Errorf("profile: decode: column %q: distinct sketch: %w", c.Name, err)
			}
			// UnmarshalBinary takes the precision from the data.
			probe, _ := hyperloglog.NewSketch(Precision, false)
			if err := probe.Merge(c.distinct); err != nil {
				return nil, fmt.Errorf("profile: decode: column %q: distinct sketch: %w", c.Name, err)
			}
			c.cms = newCountMin()
			b := ec.CMS
			for i := range c.cms.cells {
				n, k := binary.Uvarint(b)
				if k <= 0 {
					return nil, fmt.Errorf("profile: decode: column %q: frequency sketch: %d of %d counters", c.Name, i, Width*Depth)
				}
				c.cms.cells[i], b = n, b[k:]
			}
			if len(b) > 0 {
				return nil, fmt.Errorf("profile: decode: column %q: frequency sketch: %d bytes after the counters", c.Name, len(b))
			}
		}
		p.Columns = append(p.Columns, c)
	}
	return p, nil
}
