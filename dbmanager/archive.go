package dbmanager

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/profile"
	"github.com/teatree/teatree/snapshot"
)

// The Parquet archive of a version lists, for every table, data files whose
// union is the table's rows at the cut (snapshot.DataFile). The cut writes
// only what changed since the previous version, with DuckDB's rowid as the
// link between a file and the live table:
//
// A table's files partition the rowid space: file i holds the rows whose
// rowid is in [FirstRowID_i, FirstRowID_i+1) (the first from 0, the last up
// to the table's NextRowID) as of the cut that wrote or verified it, and
// records their count and the sum of hash(row) (DuckDB's hash over every
// column), computed as the file is written (in the same scan as the
// file's column profile when profiles are on; hashing costs about 0.45 s
// per 3 M rows of the flights table, the price of letting a later update
// keep the files it did not touch). Rows with a rowid at or above
// NextRowID are new. DuckDB gives
// appended rows rowids above every existing one, keeps a row's rowid on an
// in-place update, and at a checkpoint may vacuum deleted rows away, which
// moves later rows to lower rowids (never higher, never across each other).
//
//   - A table not changed since the previous version keeps its files.
//   - A table that only had rows appended (functions.Result.Appended) keeps
//     its files if every range still holds exactly its file's count of
//     rows: since rowids only decrease and the old rows are unchanged, each
//     range then holds exactly its file's rows; the rows at or above
//     NextRowID go into one new file. Only the ranges from the first file
//     with a free rowid below its end are counted: a row moves only when a
//     vacuum removes a deleted row below it (an append-only table counts
//     none).
//   - Otherwise (update, delete, upsert, sql, or the count check failed)
//     every range is counted and hashed: a file whose range has the same
//     count and a known, equal hash sum is kept, an empty range's file is dropped, any
//     other range is written again from the table. A version cut from a
//     compact copy of the live file (rowids renumbered) is always hashed.
//   - A table that is new, created or dropped since (functions.Result.
//     Replaced: create_table, drop_table, refresh), small (its files under
//     smallTableBytes), has a column named rowid (which hides DuckDB's), or
//     has no previous files is written whole, in files of at most fileRows
//     rowids.
//   - A table with more than maxFiles small files (under fileRows/16 rows:
//     left by small appends) has each run of adjacent small files merged
//     into one file; larger files are never rewritten by a merge.
//
// A kept file is therefore verified by count and a 64-bit hash sum (a
// change escaping it would need a collision of the sums), a written one is
// the table's rows of its range in the cut's read transaction, and the
// files' rows must add up to the table's count, else the table is written
// whole.
var (
	// fileRows is the most rows of a data file written whole or by a
	// compaction: 2^20, eight of DuckDB's Parquet row groups (122,880 rows)
	// and a bit; a file of the 3M-row flights table is about 4.5 MiB.
	fileRows int64 = 1 << 20
	// maxFiles is the number of small data files (under fileRows/16 rows)
	// above which a table's adjacent small files are merged.
	maxFiles = 16
	// smallTableBytes: a changed table whose data files are smaller than
	// this in all is written whole, as one file.
	smallTableBytes int64 = 1 << 20
) // variables only so tests can make them small

// dataFile is a data file of a cut with its range of rowids and its rows'
// hash sum (see above).
type dataFile struct {
	snapshot.DataFile
	FirstRowID int64  `json:"first_rowid"`
	RowHash    string `json:"row_hash"`        // sum of hash(row) over its rows, decimal
	Local      string `json:"local,omitempty"` // written at this cut, to upload; "" when an earlier version's
	// Profile is the local path of the file's column profile written with
	// it (Local + ".profile"), to upload to snapshot.ProfileKey; "" when an
	// earlier version's or when profiling failed.
	Profile string `json:"profile,omitempty"`
}

// archiver writes the data files of one cut, in the cut's read transaction.
type archiver struct {
	conn      *sql.Conn
	dir       string // the version's directory
	namespace string // block namespace of the data file keys (snapshot.ParquetKey)
	// rowidsMoved: the live file was replaced by a compact copy since the
	// previous cut, so rowids are renumbered.
	rowidsMoved bool
	// profiles: every data file written gets its column profile
	// (Config.Profiles).
	profiles bool
	written  int
	log      *slog.Logger
}

// table fills in t.Data and t.NextRowID from b, the table in the previous
// cut (hasBase false: none), whose requests ended at baseLast.
func (a *archiver) table(ctx context.Context, t *cutTable, b cutTable, hasBase bool, baseLast uint64) error {
	hasBase = hasBase && len(b.Data) > 0
	switch {
	case hasBase && t.ChangedSeq <= baseLast && b.Rows == t.Rows:
		t.Data, t.NextRowID = carried(b.Data), b.NextRowID
		return nil
	case !hasBase || t.ReplacedSeq > baseLast || hasRowidColumn(t.Columns) || filesBytes(b.Data) < smallTableBytes:
		return a.whole(ctx, t)
	}
	kept := false
	if t.ModifiedSeq <= baseLast && !a.rowidsMoved {
		var err error
		if kept, err = a.appended(ctx, t, b); err != nil {
			return err
		}
	}
	if !kept {
		if err := a.verify(ctx, t, b); err != nil {
			return err
		}
	}
	if err := a.merge(ctx, t); err != nil {
		return err
	}
	var rows int64
	for _, f := range t.Data {
		rows += f.Rows
	}
	if rows != t.Rows {
		return a.whole(ctx, t)
	}
	return nil
}

// whole writes table t as files of at most fileRows rowids each (one empty
// file for an empty table).
func (a *archiver) whole(ctx context.Context, t *cutTable) error {
	t.Data = nil
	var next int64
	if err := a.conn.QueryRowContext(ctx, "SELECT coalesce(max(rowid) + 1, 0) FROM main."+duck.Ident(t.Name)).Scan(&next); err != nil {
		return fmt.Errorf("highest rowid of %s: %w", t.Name, err)
	}
	t.NextRowID = next
	if hasRowidColumn(t.Columns) { // no rowid to split by
		return a.write(ctx, t, 0, -1, "")
	}
	for lo := int64(0); lo < next; lo += fileRows {
		if err := a.write(ctx, t, lo, min(lo+fileRows, next), ""); err != nil {
			return err
		}
	}
	return a.normalize(ctx, t)
}

// normalize drops the files of t without rows (their ranges are empty, so
// the file before covers them) and starts the first range at rowid 0; a
// table without rows gets one empty file.
func (a *archiver) normalize(ctx context.Context, t *cutTable) error {
	files := t.Data[:0]
	for _, f := range t.Data {
		if f.Rows > 0 {
			files = append(files, f)
		}
	}
	t.Data = files
	if len(t.Data) == 0 {
		return a.write(ctx, t, 0, 0, "0")
	}
	t.Data[0].FirstRowID = 0
	return nil
}

// appended keeps b's files when every range holds exactly its file's rows
// and writes the rows at or above b.NextRowID into one file. It reports
// false, having changed nothing, when a range's count differs.
//
// Only the files from the first with a free rowid below its range's end
// are counted (settled): a row moves only when a vacuum removes a deleted
// row below it, and the rows of the files before have none. A table only
// ever appended to has no free rowid, so the cut reads only its new rows
// (the rowid filter prunes the row groups below them).
func (a *archiver) appended(ctx context.Context, t *cutTable, b cutTable) (bool, error) {
	from := settled(b)
	counts, err := a.ranges(ctx, t, b, from, false)
	if err != nil {
		return false, err
	}
	for i := from; i < len(b.Data); i++ {
		if counts[i].rows != b.Data[i].Rows {
			return false, nil
		}
	}
	t.Data, t.NextRowID = carried(b.Data), max(b.NextRowID, counts[len(b.Data)].next)
	if counts[len(b.Data)].rows > 0 {
		return true, a.write(ctx, t, b.NextRowID, -1, "")
	}
	return true, nil
}

// settled is the number of b's first files that hold a row for every rowid
// below their range's end.
func settled(b cutTable) int {
	var rows int64
	for i, f := range b.Data {
		if rows += f.Rows; rows != upper(b, i) {
			return i
		}
	}
	return len(b.Data)
}

// verify keeps the files of b whose range has the same count and hash sum,
// drops those whose range is empty, writes the others again, and writes the
// rows at or above b.NextRowID into one file.
func (a *archiver) verify(ctx context.Context, t *cutTable, b cutTable) error {
	counts, err := a.ranges(ctx, t, b, 0, true)
	if err != nil {
		return err
	}
	t.Data, t.NextRowID = nil, max(b.NextRowID, counts[len(b.Data)].next)
	for i, f := range b.Data {
		c := counts[i]
		switch {
		case c.rows == 0:
		case c.rows == f.Rows && c.hash == f.RowHash:
			f.Local, f.Profile = "", ""
			t.Data = append(t.Data, f)
		default:
			if err := a.write(ctx, t, f.FirstRowID, upper(b, i), c.hash); err != nil {
				return err
			}
		}
	}
	if c := counts[len(b.Data)]; c.rows > 0 {
		if err := a.write(ctx, t, b.NextRowID, -1, c.hash); err != nil {
			return err
		}
	}
	return a.normalize(ctx, t)
}

// merge rewrites each run of adjacent small files of t (fewer than
// fileRows/16 rows each, at most fileRows together) as one file, when t
// has more than maxFiles small files. Other files are never rewritten by
// a merge.
func (a *archiver) merge(ctx context.Context, t *cutTable) error {
	small := func(f dataFile) bool { return f.Rows < fileRows/16 }
	n := 0
	for _, f := range t.Data {
		if small(f) {
			n++
		}
	}
	if n <= maxFiles {
		return nil
	}
	old := t.Data
	t.Data = nil
	for i := 0; i < len(old); {
		j, rows := i+1, old[i].Rows
		for small(old[i]) && j < len(old) && small(old[j]) && rows+old[j].Rows <= fileRows {
			rows += old[j].Rows
			j++
		}
		if j-i == 1 {
			t.Data = append(t.Data, old[i])
		} else {
			hi := t.NextRowID
			if j < len(old) {
				hi = old[j].FirstRowID
			}
			if err := a.write(ctx, t, old[i].FirstRowID, hi, ""); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// rangeCount is what ranges found in one range of rowids.
type rangeCount struct {
	rows int64
	hash string // sum of hash(row), decimal; "" unless hashed
	next int64  // highest rowid + 1
}

// ranges counts (and with hash, hashes) the rows of t in the ranges of b's
// files from file from on and, last, at or above b.NextRowID:
// len(b.Data)+1 entries, those before from zero. The scan reads only the
// row groups of those ranges.
func (a *archiver) ranges(ctx context.Context, t *cutTable, b cutTable, from int, hash bool) ([]rangeCount, error) {
	// With no file to count, every row read is at or above b.NextRowID.
	bucket, lo := strconv.Itoa(len(b.Data)), b.NextRowID
	if from < len(b.Data) {
		var c strings.Builder
		c.WriteString("CASE")
		for i := from + 1; i <= len(b.Data); i++ {
			fmt.Fprintf(&c, " WHEN rowid < %d THEN %d", upper(b, i-1), i-1)
		}
		fmt.Fprintf(&c, " ELSE %d END", len(b.Data))
		bucket, lo = c.String(), b.Data[from].FirstRowID
	}
	sum := "''"
	if hash {
		sum = "coalesce(sum(" + rowHash(t.Columns) + "), 0)::VARCHAR"
	}
	// GROUP BY 1: an alias could be one of the table's column names.
	q := "SELECT " + bucket + ", count(*), " + sum + ", max(rowid) + 1 FROM main." + duck.Ident(t.Name) + " WHERE rowid >= " + strconv.FormatInt(lo, 10) + " GROUP BY 1"
	rows, err := a.conn.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("count the rows of %s by data file: %w", t.Name, err)
	}
	defer rows.Close()
	out := make([]rangeCount, len(b.Data)+1)
	for rows.Next() {
		var i int
		var c rangeCount
		if err := rows.Scan(&i, &c.rows, &c.hash, &c.next); err != nil {
			return nil, fmt.Errorf("count the rows of %s by data file: %w", t.Name, err)
		}
		out[i] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count the rows of %s by data file: %w", t.Name, err)
	}
	if hash {
		for i := range out {
			if out[i].rows == 0 {
				out[i].hash = "0"
			}
		}
	}
	return out, nil
}

// write exports the rows of t with rowid in [lo, hi) (hi -1: no upper
// bound; hi 0 with lo 0: none, an empty file) as a new data file of t,
// whose rows' hash sum is hash ("": computed here).
func (a *archiver) write(ctx context.Context, t *cutTable, lo, hi int64, hash string) error {
	where := ""
	switch {
	case lo == 0 && hi == 0:
		where = "false"
	case hasRowidColumn(t.Columns):
	case hi < 0:
		where = "rowid >= " + strconv.FormatInt(lo, 10)
	default:
		where = "rowid >= " + strconv.FormatInt(lo, 10) + " AND rowid < " + strconv.FormatInt(hi, 10)
	}
	a.written++
	path := filepath.Join(a.dir, t.Name+"."+strconv.Itoa(a.written)+".parquet")
	f, err := snapshot.ExportParquet(ctx, a.conn, t.Name, t.Columns, where, path)
	if err != nil {
		return err
	}
	d := dataFile{DataFile: snapshot.DataFile{Key: snapshot.ParquetKey(a.namespace, t.Name, f.SHA256), Bytes: f.Bytes, SHA256: f.SHA256}, FirstRowID: lo, RowHash: hash, Local: path}
	// Counted (and hashed) apart from the file, so that publish's check of
	// the file's footer against it means something: with profiles in the
	// profile's aggregate query, the same scan of the rows.
	var aggs []string
	if hash == "" {
		aggs = []string{"coalesce(sum(" + rowHash(t.Columns) + "), 0)"}
	}
	counted := false
	if a.profiles {
		p, got, err := profile.BuildWith(ctx, a.conn, t.Name, t.Columns, where, aggs)
		if err == nil {
			d.Rows, counted = p.Rows, true
			if hash == "" {
				d.RowHash = got[0].String
			}
			err = writeProfile(p, path+".profile")
		}
		if err != nil {
			a.log.Warn("data file archived without its column profile", "table", t.Name, "file", filepath.Base(path), "err", err)
		} else {
			d.Profile = path + ".profile"
		}
	}
	if !counted {
		cond := where
		if cond == "" {
			cond = "true"
		}
		sum := "''"
		if hash == "" {
			sum = aggs[0] + "::VARCHAR"
		}
		var got string
		if err := a.conn.QueryRowContext(ctx, "SELECT count(*), "+sum+" FROM main."+duck.Ident(t.Name)+" WHERE "+cond).Scan(&d.Rows, &got); err != nil {
			return fmt.Errorf("count the rows of %s: %w", t.Name, err)
		}
		if hash == "" {
			d.RowHash = got
		}
	}
	t.Data = append(t.Data, d)
	return nil
}

// writeProfile writes p to path, fsynced.
func writeProfile(p *profile.Profile, path string) error {
	data, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// upper is the end of the range of b's file i: the next file's first rowid,
// or b.NextRowID.
func upper(b cutTable, i int) int64 {
	if i+1 < len(b.Data) {
		return b.Data[i+1].FirstRowID
	}
	return b.NextRowID
}

// rowHash is the SQL expression of a row's hash over every column.
func rowHash(cols []snapshot.Column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = duck.Ident(c.Name)
	}
	return "hash(" + strings.Join(names, ", ") + ")"
}

func hasRowidColumn(cols []snapshot.Column) bool {
	for _, c := range cols {
		if strings.EqualFold(c.Name, "rowid") {
			return true
		}
	}
	return false
}

// carried returns files of an earlier version, kept as they are.
func carried(files []dataFile) []dataFile {
	out := make([]dataFile, len(files))
	for i, f := range files {
		f.Local, f.Profile = "", ""
		out[i] = f
	}
	return out
}

func filesBytes(files []dataFile) int64 {
	var n int64
	for _, f := range files {
		n += f.Bytes
	}
	return n
}
