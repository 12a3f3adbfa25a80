package functions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/teatree/teatree/model"
)

// errNotArrow marks a payload that is not a readable Arrow IPC file or
// stream, or whose types Parquet cannot hold.
var errNotArrow = errors.New("not a valid Arrow IPC file or stream")

// arrowFileMagic starts (and ends) an Arrow IPC file; a stream starts with
// a message instead.
const arrowFileMagic = "ARROW1"

// parquetRowGroupRows is the row-group length of converted files: DuckDB's
// own row-group size (122,880 rows), which bounds the memory one buffered
// row group takes.
const parquetRowGroupRows = 122880

// arrowToParquet converts the Arrow IPC file or stream at src into a
// Parquet file in the same directory (which DuckDB may read) and returns
// its path; the caller removes it. DuckDB 1.4 has no built-in Arrow IPC
// reader and duckdb-go's Arrow API needs the duckdb_arrow build tag, so
// the payload takes the Parquet path instead: arrow-go's pqarrow keeps the
// Arrow types (decimals, timestamps with zone, lists, structs, maps,
// dictionaries as their values). Errors about the file's content wrap
// errNotArrow; a panic in the decoder on a hostile file is one too.
func arrowToParquet(src string) (dst string, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(src), ".arrow-*.parquet")
	if err != nil {
		return "", err
	}
	name := out.Name()
	st, err := in.Stat()
	if err == nil {
		err = convertArrow(in, st.Size(), out)
	}
	// The Parquet writer closes out on success; close it on failure.
	if cerr := out.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = fmt.Errorf("convert to parquet: %w", cerr)
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// Bounds on what an Arrow IPC payload may make the converter do, so that a
// hostile file of a few bytes can neither allocate gigabytes nor keep the
// db-manager busy for hours (arrow-go trusts the sizes a file declares: a
// stream message's metadata length and body length, a file block's sizes,
// a compressed buffer's uncompressed length).
const (
	// arrowMemBase and arrowMemPerByte bound the memory the decoder and the
	// Parquet writer may hold at once: arrowMemBase plus arrowMemPerByte
	// bytes per byte of the file (LZ4's best ratio is about 255:1).
	arrowMemBase    = 256 << 20
	arrowMemPerByte = 256
	// arrowRowsPerByte bounds the rows of a record batch by the bytes of
	// its buffers: every column but a NULL-typed one needs at least a bit
	// per row. arrowRowsSlack allows small batches of NULL columns.
	arrowRowsPerByte = 8
	arrowRowsSlack   = 4096
)

// convertArrow reads an Arrow IPC file or stream of size bytes from in and
// writes it to out as Parquet. An Arrow file is read as the stream it
// embeds (the format is magic, stream, footer): one code path, whose
// message framing is checked against the file's size before arrow-go
// reads it.
func convertArrow(in io.ReaderAt, size int64, out io.Writer) (err error) {
	mem := &boundedAllocator{mem: memory.NewGoAllocator(), limit: arrowMemBase + arrowMemPerByte*size}
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(errArrowMemory); ok {
				err = fmt.Errorf("%w: decoding it needs more than %d bytes of memory (at most %d + %d per byte of the file)", errNotArrow, int64(e), int64(arrowMemBase), arrowMemPerByte)
				return
			}
			err = fmt.Errorf("%w: the decoder failed: %v", errNotArrow, model.Excerpt(fmt.Sprint(r), model.MaxErrorText))
		}
	}()
	start, end := int64(0), size
	var magic [len(arrowFileMagic)]byte
	if n, _ := in.ReadAt(magic[:], 0); string(magic[:n]) == arrowFileMagic {
		if start, end, err = arrowFileStream(in, size); err != nil {
			return err
		}
	}
	if err := checkArrowFraming(in, start, end); err != nil {
		return err
	}
	sr, err := ipc.NewReader(io.NewSectionReader(in, start, end-start), ipc.WithAllocator(mem))
	if err != nil {
		return fmt.Errorf("%w: %w", errNotArrow, model.Shorten(err))
	}
	defer sr.Release()
	schema := sr.Schema()
	if schema == nil || schema.NumFields() == 0 {
		return fmt.Errorf("%w: the schema has no fields", errNotArrow)
	}
	props := parquet.NewWriterProperties(parquet.WithAllocator(mem), parquet.WithMaxRowGroupLength(parquetRowGroupRows))
	w, err := pqarrow.NewFileWriter(schema, out, props, pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(mem)))
	if err != nil {
		return fmt.Errorf("%w: schema %s cannot be stored: %w", errNotArrow, model.Excerpt(schema.String(), model.MaxErrorText), model.Shorten(err))
	}
	for i := 0; sr.Next(); i++ {
		rec := sr.RecordBatch()
		if b, longest := bufferBytes(rec); max(rec.NumRows(), longest) > arrowRowsPerByte*b+arrowRowsSlack {
			w.Close()
			return fmt.Errorf("%w: record batch %d declares %d rows (%d values in its longest nested array) but holds %d bytes of data", errNotArrow, i, rec.NumRows(), longest, b)
		}
		if err := checkRecord(rec); err != nil {
			w.Close()
			return fmt.Errorf("%w: record batch %d: %w", errNotArrow, i, err)
		}
		if err := w.WriteBuffered(rec); err != nil {
			w.Close()
			return fmt.Errorf("%w: %w", errNotArrow, model.Shorten(err))
		}
	}
	if err := sr.Err(); err != nil {
		w.Close()
		return fmt.Errorf("%w: %w", errNotArrow, model.Shorten(err))
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("convert to parquet: %w", err)
	}
	return nil
}

// arrowFileStream returns where the stream inside an Arrow IPC file starts
// and ends: after the 8-byte magic and padding, and before the footer,
// whose length the file's last 10 bytes give (int32, then "ARROW1").
func arrowFileStream(in io.ReaderAt, size int64) (start, end int64, err error) {
	const head, tail = 8, 4 + int64(len(arrowFileMagic))
	var t [tail]byte
	if size < head+tail {
		return 0, 0, fmt.Errorf("%w: the file is %d bytes, too short for an Arrow file", errNotArrow, size)
	}
	if _, err := in.ReadAt(t[:], size-tail); err != nil {
		return 0, 0, err
	}
	if string(t[4:]) != arrowFileMagic {
		return 0, 0, fmt.Errorf("%w: the file starts with %q but does not end with it", errNotArrow, arrowFileMagic)
	}
	footer := int64(binary.LittleEndian.Uint32(t[:4]))
	if footer > size-head-tail {
		return 0, 0, fmt.Errorf("%w: the footer length %d exceeds the file (%d bytes)", errNotArrow, footer, size)
	}
	return head, size - tail - footer, nil
}

// checkArrowFraming walks the messages of the Arrow IPC stream in
// [start, end) of in, as the format specification frames them (optional
// continuation 0xFFFFFFFF, int32 metadata length, a flatbuffer Message
// whose field 3 is the int64 body length, the body), and refuses a
// metadata or body length beyond the end: arrow-go allocates what they
// declare before it reads.
func checkArrowFraming(in io.ReaderAt, start, end int64) (err error) {
	defer func() {
		if r := recover(); r != nil { // a flatbuffer offset out of range
			err = fmt.Errorf("%w: a message header is not a valid flatbuffer", errNotArrow)
		}
	}()
	var b [4]byte
	word := func(at int64) (uint32, bool) {
		if end-at < 4 {
			return 0, false
		}
		if _, err := in.ReadAt(b[:], at); err != nil {
			return 0, false
		}
		return binary.LittleEndian.Uint32(b[:]), true
	}
	for pos, i := start, 0; pos < end; i++ {
		n, ok := word(pos)
		if !ok {
			return nil // arrow-go reports the truncated message
		}
		pos += 4
		if n == 0xFFFFFFFF {
			if n, ok = word(pos); !ok {
				return nil
			}
			pos += 4
		}
		if n == 0 {
			return nil // end of stream
		}
		meta := int64(int32(n))
		if meta < 0 || meta > end-pos {
			return fmt.Errorf("%w: message %d declares %d bytes of metadata, but %d bytes are left", errNotArrow, i, meta, end-pos)
		}
		buf := make([]byte, meta)
		if _, err := in.ReadAt(buf, pos); err != nil {
			return fmt.Errorf("%w: message %d: %w", errNotArrow, i, err)
		}
		pos += meta
		var body int64
		if meta >= 4 {
			t := flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}
			if o := t.Offset(4 + 2*3); o != 0 { // Message.bodyLength
				body = t.GetInt64(t.Pos + flatbuffers.UOffsetT(o))
			}
			if !fbMessageOK(t) {
				return fmt.Errorf("%w: message %d declares more entries (fields, children, buffers, metadata) than its %d bytes hold", errNotArrow, i, meta)
			}
		}
		if body < 0 || body > end-pos {
			return fmt.Errorf("%w: message %d declares a body of %d bytes, but %d bytes are left", errNotArrow, i, body, end-pos)
		}
		pos += body
	}
	return nil
}

// fbVector reports whether the vector in field slot of flatbuffer table t
// (absent, or elem bytes per entry) lies inside the buffer, and returns
// where its entries start and how many there are. arrow-go makes a slice
// of whatever length a vector declares before it reads the entries.
func fbVector(t flatbuffers.Table, slot, elem int) (start flatbuffers.UOffsetT, n int, ok bool) {
	o := t.Offset(flatbuffers.VOffsetT(4 + 2*slot))
	if o == 0 {
		return 0, 0, true
	}
	n = t.VectorLen(flatbuffers.UOffsetT(o))
	start = t.Vector(flatbuffers.UOffsetT(o))
	return start, n, n >= 0 && int64(start)+int64(n)*int64(elem) <= int64(len(t.Bytes))
}

// fbMessageOK checks the vectors of an Arrow IPC Message flatbuffer
// (format/Message.fbs, Schema.fbs): custom_metadata; a Schema's fields,
// custom_metadata and features, each Field's children, custom_metadata
// and Union typeIds, recursively; a RecordBatch's (or DictionaryBatch's)
// nodes, buffers and variadicBufferCounts.
func fbMessageOK(msg flatbuffers.Table) bool {
	const (
		headerSchema          = 1
		headerDictionaryBatch = 2
		headerRecordBatch     = 3
		typeUnion             = 14
	)
	table := func(t flatbuffers.Table, slot int) (flatbuffers.Table, bool) {
		o := t.Offset(flatbuffers.VOffsetT(4 + 2*slot))
		if o == 0 {
			return flatbuffers.Table{}, false
		}
		return flatbuffers.Table{Bytes: t.Bytes, Pos: t.Indirect(t.Pos + flatbuffers.UOffsetT(o))}, true
	}
	byteField := func(t flatbuffers.Table, slot int) byte {
		if o := t.Offset(flatbuffers.VOffsetT(4 + 2*slot)); o != 0 {
			return t.GetByte(t.Pos + flatbuffers.UOffsetT(o))
		}
		return 0
	}
	vec := func(t flatbuffers.Table, slot, elem int) bool { _, _, ok := fbVector(t, slot, elem); return ok }
	var field func(f flatbuffers.Table, depth int) bool
	field = func(f flatbuffers.Table, depth int) bool {
		if depth > MaxNesting || !vec(f, 6, 4) {
			return false
		}
		if byteField(f, 2) == typeUnion {
			if u, ok := table(f, 3); ok && !vec(u, 1, 4) {
				return false
			}
		}
		start, n, ok := fbVector(f, 5, 4)
		if !ok {
			return false
		}
		for i := range n {
			c := flatbuffers.Table{Bytes: f.Bytes, Pos: f.Indirect(start + flatbuffers.UOffsetT(4*i))}
			if !field(c, depth+1) {
				return false
			}
		}
		return true
	}
	batch := func(b flatbuffers.Table) bool { return vec(b, 1, 16) && vec(b, 2, 16) && vec(b, 4, 8) }
	if !vec(msg, 4, 4) {
		return false
	}
	h, ok := table(msg, 2)
	if !ok {
		return true
	}
	switch byteField(msg, 1) {
	case headerSchema:
		if !vec(h, 2, 4) || !vec(h, 3, 8) {
			return false
		}
		start, n, ok := fbVector(h, 1, 4)
		if !ok {
			return false
		}
		for i := range n {
			if !field(flatbuffers.Table{Bytes: h.Bytes, Pos: h.Indirect(start + flatbuffers.UOffsetT(4*i))}, 0) {
				return false
			}
		}
	case headerRecordBatch:
		return batch(h)
	case headerDictionaryBatch:
		if d, ok := table(h, 1); ok {
			return batch(d)
		}
	}
	return true
}

// bufferBytes is the size of the buffers of rec's columns and their
// children, and the length of the longest of them (a list's values, say).
func bufferBytes(rec arrow.RecordBatch) (n, longest int64) {
	var walk func(d arrow.ArrayData)
	walk = func(d arrow.ArrayData) {
		longest = max(longest, int64(d.Len()))
		for _, b := range d.Buffers() {
			if b != nil {
				n += int64(b.Len())
			}
		}
		for _, c := range d.Children() {
			walk(c)
		}
		if dict, ok := d.Dictionary().(*array.Data); ok && dict != nil {
			walk(dict)
		}
	}
	for _, c := range rec.Columns() {
		walk(c.Data())
	}
	return n, longest
}

// checkRecord checks what arrow-go's IPC reader takes on trust and its
// compute kernels index without bounds checks, in goroutines of their own
// where a panic cannot be recovered (pqarrow's dictionary writer runs
// compute.Take): dictionary indices within the dictionary, and the offsets
// of variable-length values and of lists non-decreasing and within their
// data, in every
// column of rec and every nested child and dictionary. Arrow C++'s
// ValidateFull checks the same.
func checkRecord(rec arrow.RecordBatch) error {
	for i, c := range rec.Columns() {
		if err := checkValues(c); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}

func checkValues(a arrow.Array) error {
	switch a := a.(type) {
	case *array.Dictionary:
		n := a.Dictionary().Len()
		for i := 0; i < a.Len(); i++ {
			if k := a.GetValueIndex(i); a.IsValid(i) && (k < 0 || k >= n) {
				return fmt.Errorf("dictionary index %d at row %d is outside the dictionary's %d values", k, i, n)
			}
		}
		return checkValues(a.Dictionary())
	case *array.Struct:
		for i := 0; i < a.NumField(); i++ {
			if err := checkValues(a.Field(i)); err != nil {
				return err
			}
		}
	case *array.List:
		return checkList(a.Offsets(), a.ListValues())
	case *array.Map:
		return checkList(a.Offsets(), a.ListValues())
	case *array.LargeList:
		return checkList(a.Offsets(), a.ListValues())
	case array.ListLike:
		return checkValues(a.ListValues())
	case *array.String:
		return checkOffsets(a.ValueOffsets(), a.Data())
	case *array.Binary:
		return checkOffsets(a.ValueOffsets(), a.Data())
	case *array.LargeString:
		return checkOffsets(a.ValueOffsets(), a.Data())
	case *array.LargeBinary:
		return checkOffsets(a.ValueOffsets(), a.Data())
	}
	return nil
}

// checkList checks the offsets of a list array into its values (pqarrow
// writes a repetition level for every value they span) and the values.
func checkList[T int32 | int64](offs []T, values arrow.Array) error {
	n := T(values.Len())
	if len(offs) > 0 && offs[0] < 0 {
		return fmt.Errorf("list offset %d is negative", offs[0])
	}
	for i := 1; i < len(offs); i++ {
		if offs[i] < offs[i-1] || offs[i] > n {
			return fmt.Errorf("list offsets %d, %d at row %d are decreasing or beyond the list's %d values", offs[i-1], offs[i], i-1, n)
		}
	}
	return checkValues(values)
}

// checkOffsets checks the offsets of a variable-length array with data d.
func checkOffsets[T int32 | int64](offs []T, d arrow.ArrayData) error {
	var data int64
	if bufs := d.Buffers(); len(bufs) > 2 && bufs[2] != nil {
		data = int64(bufs[2].Len())
	}
	if len(offs) > 0 && offs[0] < 0 {
		return fmt.Errorf("value offset %d is negative", offs[0])
	}
	for i := 1; i < len(offs); i++ {
		if offs[i] < offs[i-1] || int64(offs[i]) > data {
			return fmt.Errorf("value offsets %d, %d at row %d are decreasing or beyond the %d bytes of data", offs[i-1], offs[i], i-1, data)
		}
	}
	return nil
}

// errArrowMemory is the panic of a boundedAllocator over its limit: the
// bytes the refused allocation would have made live.
type errArrowMemory int64

// boundedAllocator is a memory.Allocator that panics with errArrowMemory
// when the bytes it holds would exceed limit; convertArrow recovers.
type boundedAllocator struct {
	mem   memory.Allocator
	limit int64
	live  int64
}

var _ memory.Allocator = (*boundedAllocator)(nil)

func (a *boundedAllocator) grow(by int) {
	if by < 0 || a.live+int64(by) > a.limit {
		panic(errArrowMemory(a.live + int64(by)))
	}
	a.live += int64(by)
}

func (a *boundedAllocator) Allocate(size int) []byte {
	a.grow(size)
	return a.mem.Allocate(size)
}

func (a *boundedAllocator) Reallocate(size int, b []byte) []byte {
	a.grow(size - len(b))
	return a.mem.Reallocate(size, b)
}

func (a *boundedAllocator) Free(b []byte) {
	a.live -= int64(len(b))
	a.mem.Free(b)
}
