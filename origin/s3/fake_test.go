package s3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// fakeS3 is a small in-process S3 server: one bucket, path-style requests,
// HEAD/GET (Range, If-Match), PUT (and copy), DELETE, ListObjectsV2 with a
// delimiter and pages. Signatures are not checked; the access key is.
type fakeS3 struct {
	t      *testing.T
	srv    *httptest.Server
	bucket string
	access string

	mu       sync.Mutex
	objs     map[string]fobj // guarded by mu
	reqs     []*http.Request // guarded by mu
	lists    int             // guarded by mu; list requests served
	fail     int             // guarded by mu; answer this many requests with 503 SlowDown
	pageSize int             // guarded by mu; max keys per list page (0: 1000)
	clock    time.Time       // guarded by mu; Last-Modified of the next write
}

type fobj struct {
	data []byte
	etag string
	mod  time.Time
}

func newFake(t *testing.T) *fakeS3 {
	f := &fakeS3{t: t, bucket: "bkt", access: "AKFAKE", objs: map[string]fobj{},
		clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// put stores an object as another client would; same second unless tick.
func (f *fakeS3) put(key string, data []byte) fobj {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.putLocked(key, data)
}

func (f *fakeS3) putLocked(key string, data []byte) fobj {
	sum := md5.Sum(data)
	o := fobj{data: append([]byte(nil), data...), etag: hex.EncodeToString(sum[:]), mod: f.clock}
	f.objs[key] = o
	return o
}

func (f *fakeS3) get(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[key]
	return o.data, ok
}

func (f *fakeS3) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ks []string
	for k := range f.objs {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (f *fakeS3) requests(method string) []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []*http.Request
	for _, r := range f.reqs {
		if r.Method == method {
			rs = append(rs, r)
		}
	}
	return rs
}

func (f *fakeS3) url(query string) string {
	return "s3://bkt/" + query + "endpoint=" + f.srv.URL + "&path_style=1"
}

func (f *fakeS3) errorXML(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, code)
}

func (f *fakeS3) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r.Clone(context.Background()))
	if f.fail > 0 {
		f.fail--
		f.errorXML(w, http.StatusServiceUnavailable, "SlowDown")
		return
	}
	if auth := r.Header.Get("Authorization"); !strings.Contains(auth, "Credential="+f.access+"/") {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		f.errorXML(w, http.StatusForbidden, "AccessDenied")
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(p, "/")
	if bucket != f.bucket {
		f.errorXML(w, http.StatusNotFound, "NoSuchBucket")
		return
	}
	switch {
	case key == "" && r.Method == http.MethodGet:
		f.list(w, r)
	case key == "" && r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodHead || r.Method == http.MethodGet:
		f.getObject(w, r, key)
	case r.Method == http.MethodPut:
		f.putObject(w, r, key)
	case r.Method == http.MethodDelete:
		delete(f.objs, key)
		w.WriteHeader(http.StatusNoContent)
	default:
		f.errorXML(w, http.StatusNotImplemented, "NotImplemented")
	}
}

func (f *fakeS3) getObject(w http.ResponseWriter, r *http.Request, key string) {
	o, ok := f.objs[key]
	if !ok {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		f.errorXML(w, http.StatusNotFound, "NoSuchKey")
		return
	}
	if m := r.Header.Get("If-Match"); m != "" && strings.Trim(m, `"`) != o.etag {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusPreconditionFailed)
			return
		}
		f.errorXML(w, http.StatusPreconditionFailed, "PreconditionFailed")
		return
	}
	data := o.data
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		var lo, hi int64
		if _, err := fmt.Sscanf(rg, "bytes=%d-%d", &lo, &hi); err != nil || lo >= int64(len(data)) {
			f.errorXML(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange")
			return
		}
		hi = min(hi, int64(len(data))-1)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", lo, hi, len(data)))
		data = data[lo : hi+1]
		status = http.StatusPartialContent
	}
	w.Header().Set("ETag", `"`+o.etag+`"`)
	w.Header().Set("Last-Modified", o.mod.Format(http.TimeFormat))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

func (f *fakeS3) putObject(w http.ResponseWriter, r *http.Request, key string) {
	if src := r.Header.Get("X-Amz-Copy-Source"); src != "" {
		src, _ = url.PathUnescape(src)
		_, skey, _ := strings.Cut(strings.TrimPrefix(src, "/"), "/")
		o, ok := f.objs[skey]
		if !ok {
			f.errorXML(w, http.StatusNotFound, "NoSuchKey")
			return
		}
		if m := r.Header.Get("X-Amz-Copy-Source-If-Match"); m != "" && strings.Trim(m, `"`) != o.etag {
			f.errorXML(w, http.StatusPreconditionFailed, "PreconditionFailed")
			return
		}
		n := f.putLocked(key, o.data)
		fmt.Fprintf(w, `<CopyObjectResult><ETag>"%s"</ETag><LastModified>%s</LastModified></CopyObjectResult>`,
			n.etag, n.mod.Format(time.RFC3339))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.errorXML(w, http.StatusBadRequest, "IncompleteBody")
		return
	}
	if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		body = unchunk(f.t, body)
	}
	o := f.putLocked(key, body)
	w.Header().Set("ETag", `"`+o.etag+`"`)
	w.WriteHeader(http.StatusOK)
}

// unchunk decodes an aws-chunked body (streaming signature).
func unchunk(t *testing.T, b []byte) []byte {
	var out []byte
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Errorf("aws-chunked body: %v", err)
			return out
		}
		hexSize, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(hexSize, 16, 64)
		if err != nil {
			t.Errorf("aws-chunked size %q: %v", line, err)
			return out
		}
		if n == 0 {
			return out
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(br, chunk); err != nil {
			t.Errorf("aws-chunked chunk: %v", err)
			return out
		}
		out = append(out, chunk...)
		br.ReadString('\n')
	}
}

type listResult struct {
	XMLName               xml.Name `xml:"ListBucketResult"`
	Name                  string
	Prefix                string
	KeyCount              int
	MaxKeys               int
	Delimiter             string `xml:",omitempty"`
	IsTruncated           bool
	NextContinuationToken string `xml:",omitempty"`
	Contents              []listObject
	CommonPrefixes        []listPrefix
}

type listObject struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
}

type listPrefix struct{ Prefix string }

// list is ListObjectsV2: keys after the continuation token (the last key
// or prefix of the previous page), grouped by delimiter.
func (f *fakeS3) list(w http.ResponseWriter, r *http.Request) {
	f.lists++
	q := r.URL.Query()
	prefix, delim, after := q.Get("prefix"), q.Get("delimiter"), q.Get("continuation-token")
	if after == "" {
		after = q.Get("start-after")
	}
	max := 1000
	if m, err := strconv.Atoi(q.Get("max-keys")); err == nil && m > 0 && m < max {
		max = m
	}
	if f.pageSize > 0 && f.pageSize < max {
		max = f.pageSize
	}
	var keys []string
	for k := range f.objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	res := listResult{Name: f.bucket, Prefix: prefix, MaxKeys: max, Delimiter: delim}
	last := ""
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		entry, isPrefix := k, false
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				entry, isPrefix = k[:len(prefix)+i+len(delim)], true
			}
		}
		if entry <= after || entry == last {
			continue
		}
		if res.KeyCount == max {
			res.IsTruncated = true
			res.NextContinuationToken = last
			break
		}
		last = entry
		res.KeyCount++
		if isPrefix {
			res.CommonPrefixes = append(res.CommonPrefixes, listPrefix{entry})
		} else {
			o := f.objs[k]
			res.Contents = append(res.Contents, listObject{Key: k, LastModified: o.mod.Add(123 * time.Millisecond).Format("2006-01-02T15:04:05.000Z"),
				ETag: `"` + o.etag + `"`, Size: int64(len(o.data))})
		}
	}
	w.Header().Set("Content-Type", "application/xml")
	xml.NewEncoder(w).Encode(res)
}

// quiet drops the origin's logs in tests.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open opens the fake's bucket as an origin with the fake's key.
func (f *fakeS3) open(t *testing.T, query string) *FS {
	t.Helper()
	fs, err := f.tryOpen(query, map[string]string{"AWS_ACCESS_KEY_ID": f.access, "AWS_SECRET_ACCESS_KEY": "secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs
}

func (f *fakeS3) tryOpen(query string, env map[string]string) (*FS, error) {
	cfg, err := ParseURL(f.url(query))
	if err != nil {
		return nil, err
	}
	return newFS(context.Background(), cfg, origin.OpenOptions{Timeout: 5 * time.Second, Logger: quiet},
		func(k string) string { return env[k] })
}
