package certs

import (
	"container/list"
	"crypto/tls"
)

// Cache stores issued leaf certificates by host, in the spirit of
// goproxy's CertStorage. Keys are lower-case host names or IP literals. The
// CA serialises all calls, so an implementation need not lock, and it
// decides freshness itself: a Cache only stores.
type Cache interface {
	// Get returns the certificate stored for host, if any.
	Get(host string) (*tls.Certificate, bool)
	// Put stores cert for host, evicting as the implementation sees fit.
	Put(host string, cert *tls.Certificate)
}

// LRU is a Cache of at most a fixed number of entries that evicts the
// least recently used. It is not safe for concurrent use on its own.
type LRU struct {
	max   int
	order *list.List // front is most recent; values are *lruEntry
	items map[string]*list.Element
}

type lruEntry struct {
	host string
	cert *tls.Certificate
}

// NewLRU returns an LRU holding at most size entries (at least one).
func NewLRU(size int) *LRU {
	return &LRU{max: max(size, 1), order: list.New(), items: map[string]*list.Element{}}
}

// Get implements Cache and marks host as recently used.
func (c *LRU) Get(host string) (*tls.Certificate, bool) {
	e, ok := c.items[host]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).cert, true
}

// Put implements Cache.
func (c *LRU) Put(host string, cert *tls.Certificate) {
	if e, ok := c.items[host]; ok {
		e.Value.(*lruEntry).cert = cert
		c.order.MoveToFront(e)
		return
	}
	c.items[host] = c.order.PushFront(&lruEntry{host, cert})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry).host)
	}
}

// Len returns the number of entries.
func (c *LRU) Len() int { return c.order.Len() }
