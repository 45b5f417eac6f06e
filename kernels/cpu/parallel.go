package cpu

import (
	"sync"
	"sync/atomic"
)

// minGrain is the least work, in "element operations", worth handing to a
// goroutine: starting one and joining it costs about a microsecond, which is
// a few thousand simple float operations.
const minGrain = 1 << 14

// chunks returns how many contiguous chunks to split n items of cost
// costPerItem into: at most be.threads, each at least minGrain of work.
func (be *Backend) chunks(n, costPerItem int) int {
	if n <= 0 {
		return 0
	}
	if costPerItem < 1 {
		costPerItem = 1
	}
	c := n * costPerItem / minGrain
	if c > be.threads {
		c = be.threads
	}
	if c > n {
		c = n
	}
	if c < 1 {
		c = 1
	}
	return c
}

// parallelFor runs fn over [0, n) split into contiguous ranges, one per
// goroutine, running the last range on the calling goroutine. Small work
// (n*costPerItem below minGrain) runs inline with no goroutine at all.
func (be *Backend) parallelFor(n, costPerItem int, fn func(lo, hi int)) {
	c := be.chunks(n, costPerItem)
	if c <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	wg.Add(c - 1)
	for i := 0; i < c-1; i++ {
		lo, hi := i*n/c, (i+1)*n/c
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn((c-1)*n/c, n)
	wg.Wait()
}

// parallelItems runs fn(worker, item) for every item in [0, n) on up to
// be.threads workers that take items one at a time from a shared counter, so
// items of uneven cost balance themselves (list the heavy ones first). worker
// is in [0, min(be.threads, n)) and lets fn use per-worker scratch.
func (be *Backend) parallelItems(n int, fn func(worker, item int)) {
	w := be.threads
	if w > n {
		w = n
	}
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func(worker int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(worker, i)
		}
	}
	wg.Add(w - 1)
	for k := 1; k < w; k++ {
		go func() {
			defer wg.Done()
			work(k)
		}()
	}
	work(0)
	wg.Wait()
}
