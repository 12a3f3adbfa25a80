package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"
)

// A lean codec of the Arrow IPC streaming format for the columns most
// functions see (integers, float32/64, bool, utf8, binary, date32/64,
// timestamp, decimal128; flat, no dictionary, no compression, no
// metadata), so that a module does not pay arrow-go's IPC reader and
// writer under Go's wasm backend for every batch. The reader makes the
// arrays views of the input's bytes (no copy); the writer appends to a
// buffer the SDK reuses across calls. Anything else is errUnsupported and
// Run falls back to arrow-go's reader or writer, so the wire format (ABI
// version 1, docs/wasm.md) is the same either way. The message layout is
// the flatbuffers schema format/Message.fbs and Schema.fbs of Arrow.

// errUnsupported marks a stream or batch the lean codec leaves to arrow-go.
var errUnsupported = errors.New("not for the lean codec")

// Message.fbs: Message's slots, MessageHeader's and MetadataVersion's values.
const (
	msgVersion, msgHeaderType, msgHeader, msgBodyLength, msgCustomMetadata = 0, 1, 2, 3, 4

	headerSchema, headerRecordBatch = 1, 3
	metadataV5                      = 4
)

// Schema.fbs: the slots of Schema, Field and RecordBatch, and Type's values.
const (
	schemaEndianness, schemaFields, schemaCustomMetadata, schemaFeatures = 0, 1, 2, 3

	fieldName, fieldNullable, fieldTypeType, fieldType, fieldDictionary, fieldChildren, fieldCustomMetadata = 0, 1, 2, 3, 4, 5, 6

	batchLength, batchNodes, batchBuffers, batchCompression, batchVariadic = 0, 1, 2, 3, 4

	typeInt, typeFloat, typeBinary, typeUtf8, typeBool, typeDecimal, typeDate, typeTimestamp = 2, 3, 4, 5, 6, 7, 8, 10
)

// table is a flatbuffers table whose reads are checked against its bytes
// (flatbuffers' Go reader does no checks: a bad offset would panic).
type table struct{ flatbuffers.Table }

var errBadFlatbuffer = errors.New("a flatbuffer offset points outside its message")

// root returns the root table of buf.
func root(buf []byte) (table, error) {
	if len(buf) < 8 {
		return table{}, errBadFlatbuffer
	}
	t := table{flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}}
	return t, t.checkTable()
}

// checkTable checks that the table's vtable lies within the bytes.
func (t table) checkTable() error {
	n := uint64(len(t.Bytes))
	if uint64(t.Pos)+4 > n {
		return errBadFlatbuffer
	}
	vt := int64(t.Pos) - int64(t.GetSOffsetT(t.Pos))
	if vt < 0 || uint64(vt)+4 > n {
		return errBadFlatbuffer
	}
	vlen := uint64(t.GetVOffsetT(flatbuffers.UOffsetT(vt)))
	tlen := uint64(t.GetVOffsetT(flatbuffers.UOffsetT(vt) + 2))
	if vlen < 4 || uint64(vt)+vlen > n || uint64(t.Pos)+tlen > n {
		return errBadFlatbuffer
	}
	return nil
}

// field returns the position of slot's value, 0 when absent, after
// checking that size bytes of it are within the table's bytes.
func (t table) field(slot int, size uint64) (flatbuffers.UOffsetT, error) {
	o := t.Offset(flatbuffers.VOffsetT(4 + 2*slot))
	vt := uint64(int64(t.Pos) - int64(t.GetSOffsetT(t.Pos)))
	if uint64(4+2*slot) >= uint64(t.GetVOffsetT(flatbuffers.UOffsetT(vt))) {
		o = 0
	}
	if o == 0 {
		return 0, nil
	}
	p := t.Pos + flatbuffers.UOffsetT(o)
	if uint64(p)+size > uint64(len(t.Bytes)) {
		return 0, errBadFlatbuffer
	}
	return p, nil
}

func (t table) int64Slot(slot int, d int64) (int64, error) {
	p, err := t.field(slot, 8)
	if err != nil || p == 0 {
		return d, err
	}
	return t.GetInt64(p), nil
}

func (t table) int32Slot(slot int, d int32) (int32, error) {
	p, err := t.field(slot, 4)
	if err != nil || p == 0 {
		return d, err
	}
	return t.GetInt32(p), nil
}

func (t table) int16Slot(slot int, d int16) (int16, error) {
	p, err := t.field(slot, 2)
	if err != nil || p == 0 {
		return d, err
	}
	return t.GetInt16(p), nil
}

func (t table) byteSlot(slot int, d byte) (byte, error) {
	p, err := t.field(slot, 1)
	if err != nil || p == 0 {
		return d, err
	}
	return t.GetByte(p), nil
}

// has says whether slot is present.
func (t table) has(slot int) bool {
	p, err := t.field(slot, 0)
	return err != nil || p != 0
}

// ref returns the position that the offset in slot points to (a table,
// vector or string), 0 when absent.
func (t table) ref(slot int) (flatbuffers.UOffsetT, error) {
	p, err := t.field(slot, 4)
	if err != nil || p == 0 {
		return 0, err
	}
	q := uint64(p) + uint64(t.GetUOffsetT(p))
	if q+4 > uint64(len(t.Bytes)) {
		return 0, errBadFlatbuffer
	}
	return flatbuffers.UOffsetT(q), nil
}

// sub returns the table slot refers to.
func (t table) sub(slot int) (table, bool, error) {
	p, err := t.ref(slot)
	if err != nil || p == 0 {
		return table{}, false, err
	}
	s := table{flatbuffers.Table{Bytes: t.Bytes, Pos: p}}
	return s, true, s.checkTable()
}

// vector returns the position of the first element and the length of the
// vector slot refers to, checked for elements of size bytes.
func (t table) vector(slot int, size uint64) (flatbuffers.UOffsetT, int, error) {
	p, err := t.ref(slot)
	if err != nil || p == 0 {
		return 0, 0, err
	}
	n := uint64(t.GetUOffsetT(p))
	if uint64(p)+4+n*size > uint64(len(t.Bytes)) {
		return 0, 0, errBadFlatbuffer
	}
	return p + 4, int(n), nil
}

// elem returns the table at element i of a vector of tables at start.
func (t table) elem(start flatbuffers.UOffsetT, i int) (table, error) {
	p := start + flatbuffers.UOffsetT(4*i)
	q := uint64(p) + uint64(t.GetUOffsetT(p))
	if q+4 > uint64(len(t.Bytes)) {
		return table{}, errBadFlatbuffer
	}
	s := table{flatbuffers.Table{Bytes: t.Bytes, Pos: flatbuffers.UOffsetT(q)}}
	return s, s.checkTable()
}

// message is one encapsulated IPC message: its Message table and body.
type message struct {
	header int
	msg    table // the Message
	hdr    table // its header
	body   []byte
}

// nextMessage reads the message at the start of b and returns it and
// the bytes after it; io end (no bytes, or the end-of-stream marker)
// gives ok false.
func nextMessage(b []byte) (m message, rest []byte, ok bool, err error) {
	if len(b) == 0 {
		return m, nil, false, nil
	}
	if len(b) < 8 {
		return m, nil, false, fmt.Errorf("%d bytes at the end of the stream, not a message", len(b))
	}
	if binary.LittleEndian.Uint32(b) != 0xffffffff {
		// The pre-1.0 framing without the continuation marker is left
		// to arrow-go.
		return m, nil, false, errUnsupported
	}
	n := uint64(binary.LittleEndian.Uint32(b[4:]))
	if n == 0 {
		return m, b[8:], false, nil
	}
	if 8+n > uint64(len(b)) {
		return m, nil, false, fmt.Errorf("a message's metadata of %d bytes runs past the input's end", n)
	}
	meta := b[8 : 8+n]
	if m.msg, err = root(meta); err != nil {
		return m, nil, false, err
	}
	v, err := m.msg.int16Slot(msgVersion, 0)
	if err != nil {
		return m, nil, false, err
	}
	ht, err := m.msg.byteSlot(msgHeaderType, 0)
	if err != nil {
		return m, nil, false, err
	}
	bodyLen, err := m.msg.int64Slot(msgBodyLength, 0)
	if err != nil {
		return m, nil, false, err
	}
	if v != metadataV5 || m.msg.has(msgCustomMetadata) || (ht != headerSchema && ht != headerRecordBatch) {
		return m, nil, false, errUnsupported
	}
	hdr, ok, err := m.msg.sub(msgHeader)
	if err != nil {
		return m, nil, false, err
	}
	if !ok {
		return m, nil, false, errors.New("a message has no header")
	}
	if bodyLen < 0 || uint64(bodyLen) > uint64(len(b))-8-n {
		return m, nil, false, fmt.Errorf("a message's body of %d bytes runs past the input's end", bodyLen)
	}
	m.header, m.hdr = int(ht), hdr
	m.body = b[8+n : 8+n+uint64(bodyLen)]
	return m, b[8+n+uint64(bodyLen):], true, nil
}

// decodeStream decodes an IPC stream of one schema into its batches,
// whose arrays are views of in (valid while in is). errUnsupported when
// the stream needs arrow-go's reader.
func decodeStream(in []byte) (_ *arrow.Schema, recs []arrow.RecordBatch, err error) {
	defer func() {
		if r := recover(); r != nil {
			// The checks above should leave nothing to panic on; a
			// panic is bad input all the same.
			err = fmt.Errorf("malformed Arrow IPC stream: %v", r)
		}
		if err != nil {
			for _, r := range recs {
				r.Release()
			}
			recs = nil
		}
	}()
	m, rest, ok, err := nextMessage(in)
	if err != nil {
		return nil, nil, err
	}
	if !ok || m.header != headerSchema {
		return nil, nil, errors.New("the stream does not start with a schema message")
	}
	schema, err := decodeSchema(m.hdr)
	if err != nil {
		return nil, nil, err
	}
	for {
		m, rest, ok, err = nextMessage(rest)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return schema, recs, nil
		}
		if m.header != headerRecordBatch {
			return nil, nil, errors.New("a second schema message in the stream")
		}
		rec, err := decodeBatch(schema, m)
		if err != nil {
			return nil, nil, err
		}
		recs = append(recs, rec)
	}
}

// lastSchema caches the decoded schema of the last schema message: the
// input of every call of a request has the same.
var lastSchema struct {
	meta   []byte
	schema *arrow.Schema
}

func decodeSchema(t table) (*arrow.Schema, error) {
	if lastSchema.schema != nil && string(t.Bytes) == string(lastSchema.meta) {
		return lastSchema.schema, nil
	}
	end, err := t.int16Slot(schemaEndianness, 0)
	if err != nil {
		return nil, err
	}
	if end != 0 || t.has(schemaCustomMetadata) || t.has(schemaFeatures) {
		return nil, errUnsupported
	}
	start, n, err := t.vector(schemaFields, 4)
	if err != nil {
		return nil, err
	}
	fields := make([]arrow.Field, n)
	for i := range fields {
		f, err := t.elem(start, i)
		if err != nil {
			return nil, err
		}
		if fields[i], err = decodeField(f); err != nil {
			return nil, err
		}
	}
	s := arrow.NewSchema(fields, nil)
	lastSchema.meta, lastSchema.schema = append(lastSchema.meta[:0], t.Bytes...), s
	return s, nil
}

func decodeField(f table) (arrow.Field, error) {
	var out arrow.Field
	if f.has(fieldDictionary) || f.has(fieldCustomMetadata) {
		return out, errUnsupported
	}
	if _, n, err := f.vector(fieldChildren, 4); err != nil || n > 0 {
		if err != nil {
			return out, err
		}
		return out, errUnsupported
	}
	name, err := f.ref(fieldName)
	if err != nil {
		return out, err
	}
	if name != 0 {
		n := uint64(f.GetUOffsetT(name))
		if uint64(name)+4+n > uint64(len(f.Bytes)) {
			return out, errBadFlatbuffer
		}
		out.Name = string(f.Bytes[name+4 : uint64(name)+4+n])
	}
	nullable, err := f.byteSlot(fieldNullable, 0)
	if err != nil {
		return out, err
	}
	out.Nullable = nullable != 0
	tt, err := f.byteSlot(fieldTypeType, 0)
	if err != nil {
		return out, err
	}
	ty, ok, err := f.sub(fieldType)
	if err != nil {
		return out, err
	}
	if !ok {
		return out, errUnsupported
	}
	out.Type, err = decodeType(tt, ty)
	return out, err
}

// decodeType returns the type of a Field's type union.
func decodeType(tt byte, t table) (arrow.DataType, error) {
	switch tt {
	case typeInt:
		bits, err := t.int32Slot(0, 0)
		if err != nil {
			return nil, err
		}
		signed, err := t.byteSlot(1, 0)
		if err != nil {
			return nil, err
		}
		switch {
		case bits == 8 && signed != 0:
			return arrow.PrimitiveTypes.Int8, nil
		case bits == 16 && signed != 0:
			return arrow.PrimitiveTypes.Int16, nil
		case bits == 32 && signed != 0:
			return arrow.PrimitiveTypes.Int32, nil
		case bits == 64 && signed != 0:
			return arrow.PrimitiveTypes.Int64, nil
		case bits == 8:
			return arrow.PrimitiveTypes.Uint8, nil
		case bits == 16:
			return arrow.PrimitiveTypes.Uint16, nil
		case bits == 32:
			return arrow.PrimitiveTypes.Uint32, nil
		case bits == 64:
			return arrow.PrimitiveTypes.Uint64, nil
		}
	case typeFloat:
		p, err := t.int16Slot(0, 0)
		if err != nil {
			return nil, err
		}
		switch p {
		case 1:
			return arrow.PrimitiveTypes.Float32, nil
		case 2:
			return arrow.PrimitiveTypes.Float64, nil
		}
	case typeBinary:
		return arrow.BinaryTypes.Binary, nil
	case typeUtf8:
		return arrow.BinaryTypes.String, nil
	case typeBool:
		return arrow.FixedWidthTypes.Boolean, nil
	case typeDecimal:
		p, err := t.int32Slot(0, 0)
		if err != nil {
			return nil, err
		}
		s, err := t.int32Slot(1, 0)
		if err != nil {
			return nil, err
		}
		w, err := t.int32Slot(2, 128)
		if err != nil {
			return nil, err
		}
		if w == 128 && p >= 1 && p <= 38 && s >= 0 && s <= p {
			return &arrow.Decimal128Type{Precision: p, Scale: s}, nil
		}
	case typeDate:
		u, err := t.int16Slot(0, 1)
		if err != nil {
			return nil, err
		}
		switch u {
		case 0:
			return arrow.FixedWidthTypes.Date32, nil
		case 1:
			return arrow.FixedWidthTypes.Date64, nil
		}
	case typeTimestamp:
		u, err := t.int16Slot(0, 0)
		if err != nil {
			return nil, err
		}
		tz, err := t.ref(1)
		if err != nil {
			return nil, err
		}
		var zone string
		if tz != 0 {
			n := uint64(t.GetUOffsetT(tz))
			if uint64(tz)+4+n > uint64(len(t.Bytes)) {
				return nil, errBadFlatbuffer
			}
			zone = string(t.Bytes[tz+4 : uint64(tz)+4+n])
		}
		if u >= 0 && u <= 3 {
			return &arrow.TimestampType{Unit: arrow.TimeUnit(u), TimeZone: zone}, nil
		}
	}
	return nil, errUnsupported
}

// width is the bytes per value of a fixed-width type of the lean codec, 0
// for bool (bits), -1 for the variable-width ones.
func width(dt arrow.DataType) int {
	switch dt.ID() {
	case arrow.BOOL:
		return 0
	case arrow.STRING, arrow.BINARY:
		return -1
	}
	return dt.(arrow.FixedWidthDataType).BitWidth() / 8
}

// decodeBatch decodes a RecordBatch message of schema s.
func decodeBatch(s *arrow.Schema, m message) (arrow.RecordBatch, error) {
	t := m.hdr
	if t.has(batchCompression) {
		return nil, errUnsupported
	}
	if _, n, err := t.vector(batchVariadic, 8); err != nil || n > 0 {
		if err != nil {
			return nil, err
		}
		return nil, errUnsupported
	}
	length, err := t.int64Slot(batchLength, 0)
	if err != nil {
		return nil, err
	}
	nodes, nn, err := t.vector(batchNodes, 16)
	if err != nil {
		return nil, err
	}
	bufs, nb, err := t.vector(batchBuffers, 16)
	if err != nil {
		return nil, err
	}
	if nn != s.NumFields() {
		return nil, fmt.Errorf("a record batch has %d field nodes for %d fields", nn, s.NumFields())
	}
	if length < 0 || length > int64(len(m.body))*8+8 {
		return nil, fmt.Errorf("a record batch declares %d rows in a body of %d bytes", length, len(m.body))
	}
	buffer := func(i int) ([]byte, error) {
		if i >= nb {
			return nil, errors.New("a record batch has fewer buffers than its fields need")
		}
		p := bufs + flatbuffers.UOffsetT(16*i)
		off, n := t.GetInt64(p), t.GetInt64(p+8)
		if off < 0 || n < 0 || uint64(off)+uint64(n) > uint64(len(m.body)) {
			return nil, fmt.Errorf("buffer %d (%d bytes at %d) is outside the body of %d bytes", i, n, off, len(m.body))
		}
		b := m.body[off : off+n]
		if n > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
			// arrow-go reads values in place: keep them aligned.
			b = append(make([]byte, 0, n+8), b...)
		}
		return b, nil
	}
	cols := make([]arrow.Array, s.NumFields())
	release := func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}
	bi := 0
	for i, f := range s.Fields() {
		p := nodes + flatbuffers.UOffsetT(16*i)
		n, nulls := t.GetInt64(p), t.GetInt64(p+8)
		if n != length || nulls < 0 || nulls > n {
			release()
			return nil, fmt.Errorf("column %d has %d rows and %d nulls in a batch of %d rows", i, n, nulls, length)
		}
		col, err := decodeColumn(f.Type, int(n), int(nulls), buffer, &bi)
		if err != nil {
			release()
			return nil, fmt.Errorf("column %d: %w", i, err)
		}
		cols[i] = col
	}
	rec := array.NewRecordBatch(s, cols, length)
	release()
	return rec, nil
}

// decodeColumn makes the array of dt with n rows from the buffers
// buffer(*bi), buffer(*bi+1)… (the validity bitmap first), checked
// against n.
func decodeColumn(dt arrow.DataType, n, nulls int, buffer func(int) ([]byte, error), bi *int) (arrow.Array, error) {
	next := func() ([]byte, error) { b, err := buffer(*bi); *bi++; return b, err }
	valid, err := next()
	if err != nil {
		return nil, err
	}
	var vb *memory.Buffer
	if nulls > 0 {
		if len(valid) < (n+7)/8 {
			return nil, fmt.Errorf("a validity bitmap of %d bytes for %d rows", len(valid), n)
		}
		vb = memory.NewBufferBytes(valid)
	}
	values, err := next()
	if err != nil {
		return nil, err
	}
	var bufs []*memory.Buffer
	switch w := width(dt); {
	case w == 0:
		if len(values) < (n+7)/8 {
			return nil, fmt.Errorf("%d bytes of booleans for %d rows", len(values), n)
		}
		bufs = []*memory.Buffer{vb, memory.NewBufferBytes(values)}
	case w > 0:
		if len(values) < n*w {
			return nil, fmt.Errorf("%d bytes of %s values for %d rows", len(values), dt, n)
		}
		bufs = []*memory.Buffer{vb, memory.NewBufferBytes(values)}
	default:
		data, err := next()
		if err != nil {
			return nil, err
		}
		if len(values) < 4*(n+1) {
			return nil, fmt.Errorf("%d bytes of offsets for %d rows", len(values), n)
		}
		prev := int32(0)
		for i := range n + 1 {
			o := int32(binary.LittleEndian.Uint32(values[4*i:]))
			if o < prev || int(o) > len(data) {
				return nil, fmt.Errorf("offset %d of row %d is outside its %d bytes of data or decreasing", o, i, len(data))
			}
			prev = o
		}
		bufs = []*memory.Buffer{vb, memory.NewBufferBytes(values), memory.NewBufferBytes(data)}
	}
	d := array.NewData(dt, n, bufs, nil, nulls, 0)
	defer d.Release()
	return array.MakeFromData(d), nil
}

// encoder writes IPC streams with the lean codec; its buffers are reused
// from one call to the next.
type encoder struct {
	fb   *flatbuffers.Builder
	offs []flatbuffers.UOffsetT
	bufs [][]byte // the body's buffers of the batch being written
}

// leanSchema says whether every field of s is for the lean codec.
func leanSchema(s *arrow.Schema) bool {
	if s.HasMetadata() {
		return false
	}
	for _, f := range s.Fields() {
		if f.HasMetadata() {
			return false
		}
		switch f.Type.ID() {
		case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64,
			arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL, arrow.STRING, arrow.BINARY, arrow.DATE32, arrow.DATE64, arrow.TIMESTAMP:
		case arrow.DECIMAL128:
		default:
			return false
		}
	}
	return true
}

// leanBatch says whether rec's arrays can be written as they are (no
// offset into their buffers, the schema's types).
func leanBatch(s *arrow.Schema, rec arrow.RecordBatch) bool {
	if !rec.Schema().Equal(s) {
		return false
	}
	for _, c := range rec.Columns() {
		d := c.Data()
		if d.Offset() != 0 || len(d.Children()) > 0 {
			return false
		}
		if w := width(c.DataType()); w < 0 && c.Len() > 0 {
			if o := d.Buffers()[1]; o == nil || o.Len() < 4*(c.Len()+1) || binary.LittleEndian.Uint32(o.Bytes()) != 0 {
				return false
			}
		}
	}
	return true
}

// encodeStream appends to dst the IPC stream of recs, all of schema s;
// errUnsupported when some column needs arrow-go's writer.
func (e *encoder) encodeStream(dst []byte, s *arrow.Schema, recs []arrow.RecordBatch) ([]byte, error) {
	if !leanSchema(s) {
		return dst, errUnsupported
	}
	for _, r := range recs {
		if !leanBatch(s, r) {
			return dst, errUnsupported
		}
	}
	if e.fb == nil {
		e.fb = flatbuffers.NewBuilder(1024)
	}
	dst = e.message(dst, headerSchema, e.schema(s), 0)
	for _, r := range recs {
		hdr, body := e.batch(r)
		dst = e.message(dst, headerRecordBatch, hdr, body)
		for _, b := range e.bufs {
			dst = append(dst, b...)
			dst = pad8(dst, len(b))
		}
	}
	return binary.LittleEndian.AppendUint64(dst, 0xffffffff), nil
}

func pad8(dst []byte, n int) []byte {
	var zeros [8]byte
	return append(dst, zeros[:(8-n%8)%8]...)
}

// message finishes the Message of header hdr (already in e.fb) and
// appends it framed: continuation, length, metadata padded to 8 bytes.
func (e *encoder) message(dst []byte, ht byte, hdr flatbuffers.UOffsetT, body int64) []byte {
	b := e.fb
	b.StartObject(5)
	b.PrependInt64Slot(msgBodyLength, body, 0)
	b.PrependUOffsetTSlot(msgHeader, hdr, 0)
	b.PrependByteSlot(msgHeaderType, ht, 0)
	b.PrependInt16Slot(msgVersion, metadataV5, 0)
	b.Finish(b.EndObject())
	meta := b.FinishedBytes()
	n := (len(meta) + 7) &^ 7
	dst = binary.LittleEndian.AppendUint32(dst, 0xffffffff)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, meta...)
	dst = pad8(dst, len(meta))
	b.Reset()
	return dst
}

// schema builds the Schema table of s in e.fb.
func (e *encoder) schema(s *arrow.Schema) flatbuffers.UOffsetT {
	b := e.fb
	e.offs = e.offs[:0]
	for _, f := range s.Fields() {
		name := b.CreateString(f.Name)
		tt, ty := e.typ(f.Type)
		b.StartObject(7)
		b.PrependUOffsetTSlot(fieldType, ty, 0)
		b.PrependByteSlot(fieldTypeType, tt, 0)
		b.PrependBoolSlot(fieldNullable, f.Nullable, false)
		b.PrependUOffsetTSlot(fieldName, name, 0)
		e.offs = append(e.offs, b.EndObject())
	}
	b.StartVector(4, len(e.offs), 4)
	for i := len(e.offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(e.offs[i])
	}
	fields := b.EndVector(len(e.offs))
	b.StartObject(4)
	b.PrependUOffsetTSlot(schemaFields, fields, 0)
	return b.EndObject()
}

// typ builds the type table of dt (a type leanSchema accepts).
func (e *encoder) typ(dt arrow.DataType) (byte, flatbuffers.UOffsetT) {
	b := e.fb
	switch dt := dt.(type) {
	case *arrow.TimestampType:
		var tz flatbuffers.UOffsetT
		if dt.TimeZone != "" {
			tz = b.CreateString(dt.TimeZone)
		}
		b.StartObject(2)
		b.PrependUOffsetTSlot(1, tz, 0)
		b.PrependInt16Slot(0, int16(dt.Unit), 0)
		return typeTimestamp, b.EndObject()
	case *arrow.Decimal128Type:
		b.StartObject(3)
		b.PrependInt32Slot(2, 128, 128)
		b.PrependInt32Slot(1, dt.Scale, 0)
		b.PrependInt32Slot(0, dt.Precision, 0)
		return typeDecimal, b.EndObject()
	}
	switch dt.ID() {
	case arrow.FLOAT32, arrow.FLOAT64:
		b.StartObject(1)
		b.PrependInt16Slot(0, int16(dt.(arrow.FixedWidthDataType).BitWidth()/32), 0)
		return typeFloat, b.EndObject()
	case arrow.BOOL:
		b.StartObject(0)
		return typeBool, b.EndObject()
	case arrow.STRING:
		b.StartObject(0)
		return typeUtf8, b.EndObject()
	case arrow.BINARY:
		b.StartObject(0)
		return typeBinary, b.EndObject()
	case arrow.DATE32, arrow.DATE64:
		b.StartObject(1)
		b.PrependInt16Slot(0, int16(dt.ID()-arrow.DATE32), 1)
		return typeDate, b.EndObject()
	}
	signed := false
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64:
		signed = true
	}
	b.StartObject(2)
	b.PrependBoolSlot(1, signed, false)
	b.PrependInt32Slot(0, int32(dt.(arrow.FixedWidthDataType).BitWidth()), 0)
	return typeInt, b.EndObject()
}

// batch builds the RecordBatch table of rec in e.fb, sets e.bufs to its
// body's buffers and returns the table and the body's length.
func (e *encoder) batch(rec arrow.RecordBatch) (flatbuffers.UOffsetT, int64) {
	b := e.fb
	e.bufs = e.bufs[:0]
	n := int(rec.NumRows())
	for _, c := range rec.Columns() {
		d := c.Data()
		var valid []byte
		if c.NullN() > 0 {
			valid = d.Buffers()[0].Bytes()[:(n+7)/8]
		}
		e.bufs = append(e.bufs, valid)
		switch w := width(c.DataType()); {
		case w == 0:
			e.bufs = append(e.bufs, bytesOf(d.Buffers()[1], (n+7)/8))
		case w > 0:
			e.bufs = append(e.bufs, bytesOf(d.Buffers()[1], n*w))
		default:
			offs := bytesOf(d.Buffers()[1], 4*(n+1))
			end := 0
			if n > 0 {
				end = int(binary.LittleEndian.Uint32(offs[4*n:]))
			}
			e.bufs = append(e.bufs, offs, bytesOf(d.Buffers()[2], end))
		}
	}
	// Buffers, each padded to 8 bytes: (offset, length) structs.
	b.StartVector(16, len(e.bufs), 8)
	var body int64
	for _, x := range e.bufs {
		body += int64((len(x) + 7) &^ 7)
	}
	end := body
	for i := len(e.bufs) - 1; i >= 0; i-- {
		end -= int64((len(e.bufs[i]) + 7) &^ 7)
		b.Prep(8, 16)
		b.PrependInt64(int64(len(e.bufs[i])))
		b.PrependInt64(end)
	}
	buffers := b.EndVector(len(e.bufs))
	cols := rec.Columns()
	b.StartVector(16, len(cols), 8)
	for i := len(cols) - 1; i >= 0; i-- {
		b.Prep(8, 16)
		b.PrependInt64(int64(cols[i].NullN()))
		b.PrependInt64(int64(n))
	}
	nodes := b.EndVector(len(cols))
	b.StartObject(5)
	b.PrependInt64Slot(batchLength, int64(n), 0)
	b.PrependUOffsetTSlot(batchBuffers, buffers, 0)
	b.PrependUOffsetTSlot(batchNodes, nodes, 0)
	return b.EndObject(), body
}

// bytesOf returns the first n bytes of buf (zeros past its end: a
// builder may leave a buffer nil or short for an all-null or empty
// column).
func bytesOf(buf *memory.Buffer, n int) []byte {
	var b []byte
	if buf != nil {
		b = buf.Bytes()
	}
	if len(b) >= n {
		return b[:n]
	}
	return append(append(make([]byte, 0, n), b...), make([]byte, n-len(b))...)
}
