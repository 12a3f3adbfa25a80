package udf

// NewUncheckedHost is NewHost without the CPU-time check
// (WithCloseOnContextDone), for the benchmarks that measure what it costs
// (tests only: a module that never returns is never stopped).
func NewUncheckedHost(cacheDir string) (*Host, error) {
	h, err := NewHost(cacheDir)
	if h != nil {
		h.unchecked = true
	}
	return h, err
}
