package nfs

import (
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// Config is a parsed nfs:// origin spec:
//
//	nfs://SERVER[:PORT]/EXPORT[?version=3&conns=N&uid=U&gid=G&mountport=P&timeout=D]
//
// PORT is the NFS port (default: ask the server's portmapper); mountport is
// the MOUNT service's port (default: portmapper). uid and gid are the
// AUTH_SYS identity of eddy's own calls (default 0, root; new objects are
// still given their creator's owner). timeout overrides how long to wait
// for a server that does not answer.
type Config struct {
	Host      string
	Port      int // 0: from the portmapper
	MountPort int // 0: from the portmapper
	Export    string
	Version   int
	Conns     int
	Uid, Gid  uint32
	Timeout   time.Duration // 0: OpenOptions.Timeout or the default
}

// MaxConns bounds conns=.
const MaxConns = 64

// ParseURL parses an nfs:// origin spec.
func ParseURL(spec string) (Config, error) {
	u, err := origin.ParseURL(spec)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (Config, error) {
	if u.Scheme != "nfs" {
		return Config{}, fmt.Errorf("origin %q: scheme is not nfs", u.Redacted())
	}
	c := Config{Host: u.Hostname(), Export: path.Clean("/" + u.Path), Version: 3, Conns: 2}
	if p := u.Port(); p != "" {
		c.Port, _ = strconv.Atoi(p) // checked by origin.ParseURL
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("origin %q: query: %w", u.Redacted(), err)
	}
	for key, vals := range q {
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("origin %q: option %q given %d times", u.Redacted(), key, len(vals))
		}
		v := vals[0]
		bad := func(why string) error {
			return fmt.Errorf("origin %q: option %s=%q: %s", u.Redacted(), key, v, why)
		}
		switch key {
		case "version", "vers":
			if v != "3" {
				return Config{}, bad("only NFS version 3 is supported")
			}
		case "conns":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxConns {
				return Config{}, bad(fmt.Sprintf("want 1..%d", MaxConns))
			}
			c.Conns = n
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
		case "mountport":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return Config{}, bad("want a port 1..65535")
			}
			c.MountPort = n
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return Config{}, bad("want a positive duration such as 30s")
			}
			c.Timeout = d
		default:
			return Config{}, fmt.Errorf("origin %q: unknown option %q (known: version conns uid gid mountport timeout)", u.Redacted(), key)
		}
	}
	return c, nil
}

// String renders the config as a canonical spec (the export path escaped).
func (c Config) String() string {
	host := c.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if c.Port != 0 {
		host = fmt.Sprintf("%s:%d", host, c.Port)
	}
	u := url.URL{Scheme: "nfs", Host: host, Path: c.Export}
	return u.String()
}
