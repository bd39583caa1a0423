// Package connlimit caps the connections an HTTP server holds open, in
// total and per client IP, so that idle or slow sockets (which need no
// token to open) can never exhaust the process's file descriptors and lock
// out the clients that have work to do (issue 14).
//
// Per client, a connection over the cap is closed as soon as it is
// accepted. In total, a new connection at the cap evicts the connection
// that has been idle longest (one that has not sent a request yet, or sits
// between keep-alive requests); only when every open connection is busy
// with a request is the new one closed instead. So a flood of idle
// connections from many addresses costs a working client at most a
// reconnect, never its service.
package connlimit

import (
	"container/list"
	"net"
	"net/http"
	"sync"
)

// Limiter tracks the connections of one listener. Wrap the listener with
// Listener and set the server's ConnState to the Limiter's ConnState.
type Limiter struct {
	total, perClient int
	// OnRefuse, if set, is called (without locks held) for each
	// connection closed by a cap: reason is "per_client", "total" or
	// "evicted".
	OnRefuse func(reason string)

	mu      sync.Mutex
	open    int
	clients map[string]int
	conns   map[net.Conn]*tracked // by the accepted conn
	idle    *list.List            // of *tracked, longest idle first
}

type tracked struct {
	c      *conn
	client string
	elem   *list.Element // in idle, nil while busy
}

// New returns a Limiter of at most total connections, and at most
// perClient from one IP address (0: no per-client cap).
func New(total, perClient int) *Limiter {
	return &Limiter{total: total, perClient: perClient, clients: map[string]int{},
		conns: map[net.Conn]*tracked{}, idle: list.New()}
}

// Open returns the number of connections open now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Listener wraps ln so that every accepted connection counts against the
// caps.
func (l *Limiter) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l}
}

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := ln.l.admit(c); ok {
			return tc, nil
		}
	}
}

// admit counts c in, evicting the longest idle connection at the total
// cap, or closes c and reports false.
func (l *Limiter) admit(raw net.Conn) (net.Conn, bool) {
	client := clientOf(raw.RemoteAddr())
	l.mu.Lock()
	if l.perClient > 0 && l.clients[client] >= l.perClient {
		l.mu.Unlock()
		raw.Close()
		l.refused("per_client")
		return nil, false
	}
	var evict *conn
	if l.open >= l.total {
		front := l.idle.Front()
		if front == nil {
			l.mu.Unlock()
			raw.Close()
			l.refused("total")
			return nil, false
		}
		t := front.Value.(*tracked)
		evict = t.c
		l.forget(t) // its slot is the new connection's from now on
	}
	c := &conn{Conn: raw, l: l}
	t := &tracked{c: c, client: client}
	t.elem = l.idle.PushBack(t) // idle until it sends a request
	l.conns[raw] = t
	l.open++
	l.clients[client]++
	l.mu.Unlock()
	if evict != nil {
		evict.Conn.Close()
		l.refused("evicted")
	}
	return c, true
}

func (l *Limiter) refused(reason string) {
	if l.OnRefuse != nil {
		l.OnRefuse(reason)
	}
}

// forget removes t from the counts; l.mu is held.
func (l *Limiter) forget(t *tracked) {
	if _, ok := l.conns[t.c.Conn]; !ok {
		return
	}
	delete(l.conns, t.c.Conn)
	if t.elem != nil {
		l.idle.Remove(t.elem)
		t.elem = nil
	}
	l.open--
	if l.clients[t.client]--; l.clients[t.client] <= 0 {
		delete(l.clients, t.client)
	}
}

// ConnState is the http.Server hook that tells the Limiter which
// connections are busy and which idle.
func (l *Limiter) ConnState(c net.Conn, state http.ConnState) {
	// Behind TLS the server sees the *tls.Conn; the Limiter knows the
	// connection it accepted underneath.
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	if lc, ok := c.(*conn); ok {
		c = lc.Conn
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.conns[c]
	if !ok {
		return
	}
	switch state {
	case http.StateActive:
		if t.elem != nil {
			l.idle.Remove(t.elem)
			t.elem = nil
		}
	case http.StateIdle:
		if t.elem == nil {
			t.elem = l.idle.PushBack(t)
		}
	case http.StateHijacked, http.StateClosed:
		l.forget(t)
	}
}

// conn releases its slot when closed, once.
type conn struct {
	net.Conn
	l    *Limiter
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if t, ok := c.l.conns[c.Conn]; ok {
			c.l.forget(t)
		}
		c.l.mu.Unlock()
	})
	return err
}

// NetConn returns the accepted connection, as tls.Conn does.
func (c *conn) NetConn() net.Conn { return c.Conn }

func clientOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
