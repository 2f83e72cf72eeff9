package gateway

import "sync"

// bufPool recycles the task API's per-request byte buffers (the customer's
// body, the runtime request, the answer), which are used only within the
// handler: fewer allocations, and less for the collector to do.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// getBuf is an empty buffer from the pool.
func getBuf() *[]byte {
	p := bufPool.Get().(*[]byte)
	*p = (*p)[:0]
	return p
}

// putBuf returns a buffer; large ones (a rare 1 MiB body) are left to the
// collector rather than kept.
func putBuf(p *[]byte) {
	if cap(*p) <= 64<<10 {
		bufPool.Put(p)
	}
}
