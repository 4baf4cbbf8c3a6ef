package paramserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/internal/pki"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// bulkPair connects a client and a server through BulkCredentials over mutual TLS on
// real loopback TCP and returns the secured connections and the client's raw one.
func bulkPair(t *testing.T) (client, server net.Conn, raw *countingConn) {
	t.Helper()
	ca, err := pki.NewCA("bulk", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) *pki.Reloader {
		certPEM, keyPEM, err := ca.IssueFor(pki.Identity{Name: name, Role: pki.RoleAgent}, []string{"127.0.0.1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r, err := pki.NewReloader(certPEM, keyPEM, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	scfg := pki.ServerTLSConfig(ca.Pool(), issue("ps"), true)
	scfg.VerifyConnection = pki.RequireRole(pki.RoleAgent)
	screds := BulkCredentials(credentials.NewTLS(scfg))
	ccreds := BulkCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), issue("worker"), pki.RoleAgent)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		conn net.Conn
		info credentials.AuthInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		conn, info, err := screds.ServerHandshake(c)
		done <- result{conn, info, err}
	}()
	d, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw = &countingConn{Conn: d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err = ccreds.ClientHandshake(ctx, "127.0.0.1", raw)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The peer's identity still comes through the wrapper (the shards' caller check).
	id, err := pki.IdentityFromTLS(r.info.(credentials.TLSInfo).State)
	if err != nil || id.Name != "worker" {
		t.Fatalf("server sees identity %+v, %v; want the worker's", id, err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = r.conn.Close() })
	return client, r.conn, raw
}

// TestBulkCredentialsCoalescesRecords: one 1 MiB write over TLS (64 records) reaches
// the socket in a handful of writes instead of one per record, and the peer reads
// exactly the bytes written, in order, while it writes back at the same time.
func TestBulkCredentialsCoalescesRecords(t *testing.T) {
	client, server, raw := bulkPair(t)
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	echoErr := make(chan error, 1)
	go func() { // the server echoes everything back as it arrives
		_, err := io.CopyN(server, server, int64(3*len(payload)))
		echoErr <- err
	}()
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 3*len(payload))
		_, err := io.ReadFull(client, b)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	before := raw.writes.Load()
	if _, err := client.Write(payload); err != nil {
		t.Fatal(err)
	}
	if w := raw.writes.Load() - before; w > int64(len(payload)/bulkFlushBytes)+1 {
		t.Errorf("a 1 MiB write took %d socket writes; want at most %d (one per %d bytes)", w, len(payload)/bulkFlushBytes+1, bulkFlushBytes)
	}
	// Smaller writes, and writes that are not whole records, keep their order.
	for off := 0; off < len(payload); off += 7919 {
		if _, err := client.Write(payload[off:min(off+7919, len(payload))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Write(payload); err != nil {
		t.Fatal(err)
	}
	b := <-got
	for i := range 3 {
		if !bytes.Equal(b[i*len(payload):(i+1)*len(payload)], payload) {
			t.Fatalf("echoed copy %d differs from what was written", i)
		}
	}
	if err := <-echoErr; err != nil {
		t.Fatal(err)
	}
}
