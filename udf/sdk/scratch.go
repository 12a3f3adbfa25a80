package sdk

// scratch holds the buffers the helpers (Float64s, Valid, Strings,
// StringArray, Float64Array) hand out during a call of Run, which a
// module's teatree_process is: the SDK encodes the handler's output
// before the call returns, so the next call can reuse them instead of
// allocating. Under Go's wasm backend an allocation of a batch-sized
// buffer, and the collections its garbage causes, cost many times what
// they do natively (the collector runs on the module's one thread, inside
// the call). Outside Run (a handler called directly, natively) the
// helpers allocate as any Go code does.
var scratch struct {
	active bool // inside Run
	f64    pool[float64]
	i32    pool[int32]
	bytes  pool[byte]
	bools  pool[bool]
	strs   pool[string]
}

// beginCall makes the helpers reuse the buffers of the last call.
func beginCall() {
	s := &scratch
	s.active = true
	s.f64.next, s.i32.next, s.bytes.next, s.bools.next, s.strs.next = 0, 0, 0, 0, 0
}

func endCall() { scratch.active = false }

// pool is the buffers of one element type, handed out in order during a
// call and again from the first in the next one.
type pool[T any] struct {
	bufs [][]T
	next int
}

// get returns n values: a fresh slice outside a call, else the next
// buffer of p (its earlier contents left in place), grown if short.
func (p *pool[T]) get(n int) []T {
	if !scratch.active {
		return make([]T, n)
	}
	if p.next == len(p.bufs) {
		p.bufs = append(p.bufs, nil)
	}
	b := p.bufs[p.next]
	if cap(b) < n {
		b = make([]T, n)
		p.bufs[p.next] = b
	}
	p.next++
	return b[:n]
}

// Strings returns a slice of n strings for a handler to fill, for
// StringArray: inside a module (Run) the one of the last call, whose
// values are that call's (set every one), valid until the handler
// returns; outside Run a new one. The values of Float64s and Valid and
// the arrays of StringArray and Float64Array live as long under Run: a
// handler that keeps one across calls copies it (as it does the input).
func Strings(n int) []string { return scratch.strs.get(n) }
