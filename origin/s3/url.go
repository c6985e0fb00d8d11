package s3

import (
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// Config is a parsed s3:// origin spec:
//
//	s3://BUCKET[/PREFIX]?endpoint=URL[&region=R][&path_style=1][&credentials_file=F]
//	    [&profile=P][&spool=DIR][&timeout=D][&uid=U][&gid=G]
//
// endpoint is the server's base URL (http:// or https://; default
// https://s3.amazonaws.com). region defaults to us-east-1. path_style=1
// addresses the bucket in the path (http://host/bucket/key) rather than as
// a virtual host (http://bucket.host/key); most servers other than AWS want
// it. credentials_file names a shared-credentials file (the format of
// ~/.aws/credentials) read before any other source, profile its section.
// spool is the directory for files open for writing (default os.TempDir()).
// timeout overrides how long to wait for a server that does not answer.
type Config struct {
	Bucket   string
	Prefix   string // without leading or trailing "/"; "" for the whole bucket
	Endpoint *url.URL
	Region   string

	PathStyle       bool
	CredentialsFile string
	Profile         string
	Spool           string
	Timeout         time.Duration // 0: OpenOptions.Timeout or the default
	Uid, Gid        uint32
}

var knownOptions = []string{"endpoint", "region", "path_style", "credentials_file", "profile", "spool", "timeout", "uid", "gid"}

// ParseURL parses an s3:// origin spec. Unlike origin.ParseURL it accepts a
// spec without a prefix (s3://BUCKET?endpoint=...), the whole bucket.
func ParseURL(spec string) (Config, error) {
	u, err := url.Parse(spec)
	if err != nil {
		return Config{}, fmt.Errorf("origin %q: %v", safeSpec(spec), err)
	}
	if u.Path == "" || u.Path == "/" {
		// origin.ParseURL insists on a path; the bucket alone is a fine origin here.
		c := *u
		c.Path = "/x"
		if _, err := origin.ParseURL(c.String()); err != nil {
			return Config{}, err
		}
		u.Scheme = strings.ToLower(u.Scheme)
		return configFromURL(u)
	}
	pu, err := origin.ParseURL(spec)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(pu)
}

// safeSpec is spec without its query, for error messages: a query may hold
// something secret typed where it does not belong.
func safeSpec(spec string) string {
	if i := strings.IndexAny(spec, "?#"); i >= 0 {
		return spec[:i] + "?..."
	}
	return spec
}

func configFromURL(u *url.URL) (Config, error) {
	where := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("origin %q: scheme is not s3", where)
	}
	if u.Port() != "" {
		return Config{}, fmt.Errorf("origin %q: the host part is the bucket name; give the server as endpoint=", where)
	}
	c := Config{
		Bucket: u.Hostname(),
		Prefix: strings.Trim(u.Path, "/"),
		Region: "us-east-1",
		Spool:  os.TempDir(),
		Uid:    uint32(os.Getuid()),
		Gid:    uint32(os.Getgid()),
	}
	if err := checkBucket(c.Bucket); err != nil {
		return Config{}, fmt.Errorf("origin %q: bucket %q: %v", where, c.Bucket, err)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("origin %q: bad query", where)
	}
	endpoint := "https://s3.amazonaws.com"
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		vals := q[key]
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("origin %q: option %q given %d times", where, key, len(vals))
		}
		v := vals[0]
		bad := func(why string) error {
			return fmt.Errorf("origin %q: option %s=%q: %s", where, key, v, why)
		}
		switch key {
		case "endpoint":
			endpoint = v
		case "region":
			if v == "" {
				return Config{}, bad("empty")
			}
			c.Region = v
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, bad("want 0 or 1")
			}
			c.PathStyle = b
		case "credentials_file":
			if v == "" {
				return Config{}, bad("empty")
			}
			c.CredentialsFile = v
		case "profile":
			c.Profile = v
		case "spool":
			if !strings.HasPrefix(v, "/") {
				return Config{}, bad("want an absolute directory")
			}
			c.Spool = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return Config{}, bad("want a positive duration such as 30s")
			}
			c.Timeout = d
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return Config{}, bad("want a numeric id")
			}
			if key == "uid" {
				c.Uid = uint32(n)
			} else {
				c.Gid = uint32(n)
			}
		default:
			// The value is not echoed: it may be a secret typed in the wrong place.
			return Config{}, fmt.Errorf("origin %q: unknown option %q (known: %s; credentials never go in the URL)",
				where, key, strings.Join(knownOptions, " "))
		}
	}
	e, err := url.Parse(endpoint)
	if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.User != nil ||
		(e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "" {
		return Config{}, fmt.Errorf("origin %q: option endpoint: want http://HOST[:PORT] or https://HOST[:PORT]", where)
	}
	e.Path = ""
	c.Endpoint = e
	return c, nil
}

// checkBucket applies the S3 bucket naming rules loosely (3-63 characters of
// lower-case letters, digits, '.', '-' and '_', which some servers allow).
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("want 3 to 63 characters")
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("want lower-case letters, digits, '.', '-' or '_'")
		}
	}
	return nil
}

// String renders the config for logs: bucket, prefix, endpoint and region,
// never anything from a credential source.
func (c Config) String() string {
	u := url.URL{Scheme: "s3", Host: c.Bucket}
	if c.Prefix != "" {
		u.Path = "/" + c.Prefix
	}
	q := []string{}
	if c.Endpoint != nil {
		q = append(q, "endpoint="+(&url.URL{Scheme: c.Endpoint.Scheme, Host: c.Endpoint.Host}).String())
	}
	q = append(q, "region="+url.QueryEscape(c.Region))
	if c.PathStyle {
		q = append(q, "path_style=1")
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}
