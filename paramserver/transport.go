package paramserver

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Tuning of the parameter service's connections under TLS (issue #16: push+pull over
// mutual TLS against plaintext). Profiles of BenchmarkPushPullTLS showed, besides the
// AES-GCM work itself, two costs that only TLS has:
//
//   - crypto/tls writes every record (at most 16 KiB of plaintext) with its own write
//     system call, so a 1 MiB flush of gRPC's write buffer became 64 writes (and as many
//     wake-ups of the reader). bulkConn collects the records of one tls.Conn.Write and
//     hands them to the socket in writes of up to bulkFlushBytes.
//   - gRPC's read buffer copies every byte once more, although crypto/tls already
//     holds a whole decrypted record and answers small reads (frame headers) from it.
//     Under TLS the parameter service reads without it (ReadBufferSize 0).
//
// Plaintext connections keep gRPC's buffers: there each read is a system call.

// bulkFlushBytes bounds what bulkConn holds before writing: enough to turn 16 records
// into one system call, small enough to stay in cache.
const bulkFlushBytes = 256 << 10

// TLSServerOptions are the server options that serve the parameter service over creds
// (TLS transport credentials), to append after ServerOptions.
func TLSServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.Creds(BulkCredentials(creds)), grpc.ReadBufferSize(0)}
}

// TLSDialOptions are the dial options that reach shards over creds (TLS transport
// credentials); they go in ClientConfig.DialOptions.
func TLSDialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(BulkCredentials(creds)), grpc.WithReadBufferSize(0)}
}

// BulkCredentials wraps TLS transport credentials so that each write of the secured
// connection reaches the socket in few system calls (see bulkConn). The handshake,
// the peer's AuthInfo and everything the credentials check are unchanged.
func BulkCredentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	if _, ok := c.(bulkCredentials); ok {
		return c
	}
	return bulkCredentials{c}
}

type bulkCredentials struct {
	credentials.TransportCredentials
}

func (c bulkCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &bulkConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, b)
	if err != nil {
		return nil, nil, err
	}
	return &bulkSecureConn{Conn: conn, raw: b}, info, nil
}

func (c bulkCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &bulkConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(b)
	if err != nil {
		return nil, nil, err
	}
	return &bulkSecureConn{Conn: conn, raw: b}, info, nil
}

func (c bulkCredentials) Clone() credentials.TransportCredentials {
	return bulkCredentials{c.TransportCredentials.Clone()}
}

// bulkConn sits under the TLS connection. While a write of the secured connection is
// in progress (holds > 0) it collects what TLS writes (whole records, in order) and
// writes it in pieces of at least bulkFlushBytes; otherwise (handshake, alerts, key
// updates sent from a read) it writes through. Everything passes through mu, so the
// order of the bytes on the socket is the order TLS wrote them in.
type bulkConn struct {
	net.Conn

	mu    sync.Mutex
	holds int
	buf   []byte
}

func (c *bulkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holds == 0 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= bulkFlushBytes {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *bulkConn) hold() {
	c.mu.Lock()
	c.holds++
	c.mu.Unlock()
}

// release ends one hold and writes what was collected.
func (c *bulkConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds--
	return c.flushLocked()
}

func (c *bulkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// bulkSecureConn is the secured connection gRPC uses: each Write holds the raw
// connection's writes until the TLS records of p are all made.
type bulkSecureConn struct {
	net.Conn
	raw *bulkConn
}

func (c *bulkSecureConn) Write(p []byte) (int, error) {
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.release(); err == nil && ferr != nil {
		return n, ferr
	}
	return n, err
}
