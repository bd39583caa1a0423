package connlimit

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs an HTTP server on a loopback listener wrapped by l; handler
// defaults to a 200 "ok".
func serve(t *testing.T, l *Limiter, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	}
	srv := &http.Server{Handler: h, ConnState: l.ConnState, ReadHeaderTimeout: time.Minute}
	go srv.Serve(l.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// dialFrom opens n idle connections to addr from the loopback address
// from, and closes them at cleanup.
func dialFrom(t *testing.T, from, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d from %s: %v", i, from, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// get makes one request on a fresh connection from 127.0.0.1.
func get(t *testing.T, addr string) error {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	return err
}

// closedByServer counts the conns the server has closed (a read sees EOF
// or a reset at once).
func closedByServer(conns []net.Conn) int {
	n := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				n++
			}
		}
	}
	return n
}

func waitOpen(t *testing.T, l *Limiter, max int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Open() > max {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want at most %d", l.Open(), max)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleFloodFromOneClientHitsPerClientCap: one address opening many idle
// sockets holds at most its cap; another client is served meanwhile.
func TestIdleFloodFromOneClientHitsPerClientCap(t *testing.T) {
	t.Parallel()
	var refused atomic.Int64
	l := New(1000, 20)
	l.OnRefuse = func(string) { refused.Add(1) }
	addr := serve(t, l, nil)
	flood := dialFrom(t, "127.0.0.2", addr, 300)
	waitOpen(t, l, 20)
	if err := get(t, addr); err != nil {
		t.Fatalf("other client during the flood: %v", err)
	}
	if n := closedByServer(flood); n < 280 {
		t.Errorf("server closed %d of 300 flood connections, want at least 280", n)
	}
	if refused.Load() < 280 {
		t.Errorf("OnRefuse counted %d, want at least 280", refused.Load())
	}
}

// TestIdleFloodAtTotalCapEvictsIdle: many idle sockets from many
// addresses fill the total cap; a working client still gets in (the
// longest idle is evicted) and the count never passes the cap.
func TestIdleFloodAtTotalCapEvictsIdle(t *testing.T) {
	t.Parallel()
	l := New(50, 0)
	addr := serve(t, l, nil)
	var flood []net.Conn
	for i := 2; i < 12; i++ {
		flood = append(flood, dialFrom(t, "127.0.0."+strconv.Itoa(i), addr, 60)...)
	}
	waitOpen(t, l, 50)
	for i := 0; i < 20; i++ {
		if err := get(t, addr); err != nil {
			t.Fatalf("request %d at the cap: %v", i, err)
		}
	}
	waitOpen(t, l, 50)
	if n := closedByServer(flood); n < len(flood)-50 {
		t.Errorf("server closed %d of %d idle connections, want at least %d", n, len(flood), len(flood)-50)
	}
}

// TestBusyConnectionsAreNeverEvicted: at the cap with every connection in
// a request, a new connection is refused rather than cutting a request.
func TestBusyConnectionsAreNeverEvicted(t *testing.T) {
	t.Parallel()
	l := New(2, 0)
	hold := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	addr := serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			started.Done()
			<-hold
		}
		io.WriteString(w, "ok")
	}))
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp, err := c.Get("http://" + addr + "/hold")
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	started.Wait()
	if err := get(t, addr); err == nil {
		t.Error("a third connection was served while two requests held the cap of two")
	}
	close(hold)
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Errorf("held request: %v", err)
		}
	}
	waitOpen(t, l, 0)
}
