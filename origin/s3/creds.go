package s3

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// creds are the keys eddy signs its requests with. They are never logged:
// only source is.
type creds struct {
	access, secret, token string
	source                string // "AWS_ACCESS_KEY_ID", "credentials file /x [default]", ...
}

// errNoCredentials: no source had keys.
var errNoCredentials = errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD), " +
	"write them to ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), or name a file with credentials_file=")

// resolveCreds finds the credentials, first source that has them wins:
//
//  1. the file named by credentials_file= (its profile= section, else
//     AWS_PROFILE, else "default"); a file that is named but unreadable,
//     or lacks the section, is an error rather than a fall-through;
//  2. the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (and
//     AWS_SESSION_TOKEN), then MINIO_ROOT_USER + MINIO_ROOT_PASSWORD, then
//     MINIO_ACCESS_KEY + MINIO_SECRET_KEY;
//  3. the shared credentials file: AWS_SHARED_CREDENTIALS_FILE, else
//     ~/.aws/credentials, section profile= or AWS_PROFILE or "default".
//
// getenv is os.Getenv outside tests.
func resolveCreds(c Config, getenv func(string) string) (creds, error) {
	profile := c.Profile
	if profile == "" {
		profile = getenv("AWS_PROFILE")
	}
	if profile == "" {
		profile = "default"
	}
	if c.CredentialsFile != "" {
		cr, err := fromFile(c.CredentialsFile, profile)
		if err != nil {
			return creds{}, fmt.Errorf("credentials_file: %w", err)
		}
		return cr, nil
	}
	pairs := [][3]string{
		{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
		{"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN"},
		{"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", ""},
		{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", ""},
	}
	for _, p := range pairs {
		id, secret := getenv(p[0]), getenv(p[1])
		if id == "" && secret == "" {
			continue
		}
		if id == "" || secret == "" {
			return creds{}, fmt.Errorf("environment: %s and %s must be set together", p[0], p[1])
		}
		cr := creds{access: id, secret: secret, source: "environment " + p[0]}
		if p[2] != "" {
			cr.token = getenv(p[2])
		}
		return cr, nil
	}
	file := getenv("AWS_SHARED_CREDENTIALS_FILE")
	named := file != ""
	if !named {
		home := getenv("HOME")
		if home == "" {
			return creds{}, errNoCredentials
		}
		file = filepath.Join(home, ".aws", "credentials")
	}
	if _, err := os.Stat(file); err != nil {
		if named {
			return creds{}, fmt.Errorf("AWS_SHARED_CREDENTIALS_FILE: %w", err)
		}
		return creds{}, errNoCredentials
	}
	return fromFile(file, profile)
}

// fromFile reads one profile of a shared credentials file.
func fromFile(file, profile string) (creds, error) {
	if _, err := os.Stat(file); err != nil {
		return creds{}, err
	}
	p := &credentials.FileAWSCredentials{Filename: file, Profile: profile}
	v, err := p.RetrieveWithCredContext(nil)
	if err != nil {
		return creds{}, fmt.Errorf("%s [%s]: %v", file, profile, err)
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return creds{}, fmt.Errorf("%s [%s]: no aws_access_key_id and aws_secret_access_key", file, profile)
	}
	return creds{access: v.AccessKeyID, secret: v.SecretAccessKey, token: v.SessionToken,
		source: fmt.Sprintf("credentials file %s [%s]", file, profile)}, nil
}
