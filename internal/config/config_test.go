package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type dbConf struct {
	URL          string `description:"Postgres URL"`
	PasswordFile string `description:"file holding the password"`
}

type testConf struct {
	Listen  string        `description:"listen address"`
	Timeout time.Duration `description:"a timeout"`
	DB      dbConf        `description:"database"`
	Workers int           `description:"workers"`
	Debug   bool          `description:"debug"`
}

func defaults() *testConf {
	return &testConf{Listen: ":8080", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://localhost/x"}, Workers: 2}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "c.yaml")
	os.WriteFile(yml, []byte("listen: \":9000\"\nworkers: 7\ndb:\n  url: postgres://file/db\n"), 0o600)
	toml := filepath.Join(dir, "c.toml")
	os.WriteFile(toml, []byte("listen = \":9100\"\n"), 0o600)

	tests := []struct {
		name string
		args []string
		env  []string
		want testConf
	}{
		{"defaults", nil, nil, *defaults()},
		{"file", []string{"--configfile", yml}, nil, testConf{Listen: ":9000", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://file/db"}, Workers: 7}},
		{"toml via env", nil, []string{"NLPSWARM_CONFIGFILE=" + toml}, testConf{Listen: ":9100", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://localhost/x"}, Workers: 2}},
		{"env over file", []string{"--configfile=" + yml}, []string{"NLPSWARM_WORKERS=9", "NLPSWARM_DB_URL=postgres://env/db"}, testConf{Listen: ":9000", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://env/db"}, Workers: 9}},
		{"flags over env", []string{"--configfile=" + yml, "--workers=3", "--timeout=1m", "--debug"}, []string{"NLPSWARM_WORKERS=9"}, testConf{Listen: ":9000", Timeout: time.Minute, DB: dbConf{URL: "postgres://file/db"}, Workers: 3, Debug: true}},
		{"other roles' and tools' variables are ignored", nil, []string{"NLPSWARM_TEST_DB_URL=postgres://x", "NLPSWARM_SERVER=http://a", "NLPSWARM_TOKEN=t", "NLPSWARM_REDIS_ADDR=r:1", "NLPSWARM_WORKERS=4"}, testConf{Listen: ":8080", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://localhost/x"}, Workers: 4}},
		{"dotted flag", []string{"--db.url=postgres://flag/db", "--db.passwordfile", "/run/secrets/pw"}, nil, testConf{Listen: ":8080", Timeout: 5 * time.Second, DB: dbConf{URL: "postgres://flag/db", PasswordFile: "/run/secrets/pw"}, Workers: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			if err := Load(c, tt.args, tt.env); err != nil {
				t.Fatal(err)
			}
			if *c != tt.want {
				t.Fatalf("got %+v\nwant %+v", *c, tt.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: [unclosed\n"), 0o600)
	badType := filepath.Join(dir, "badtype.yaml")
	os.WriteFile(badType, []byte("workers: many\n"), 0o600)
	txt := filepath.Join(dir, "c.txt")
	os.WriteFile(txt, []byte("x"), 0o600)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"--nope=1"}, nil, "unknown flag --nope"},
		{"positional", []string{"extra"}, nil, "unexpected argument"},
		{"missing file", []string{"--configfile", filepath.Join(dir, "missing.yaml")}, nil, "config file"},
		{"malformed file", []string{"--configfile", bad}, nil, "config file"},
		{"bad type in file", []string{"--configfile", badType}, nil, "config file"},
		{"bad extension", []string{"--configfile", txt}, nil, "want a .yaml"},
		{"bad flag value", []string{"--workers=x"}, nil, "flags"},
		{"bad env value", nil, []string{"NLPSWARM_TIMEOUT=soon"}, "environment"},
		{"configfile without value", []string{"--configfile"}, nil, "needs a file path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Load(defaults(), tt.args, tt.env)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *config.Error, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	if err := Load(defaults(), []string{"--help"}, nil); !errors.Is(err, ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	var b strings.Builder
	if err := Help(&b, "test", "a role", defaults()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--listen", `":8080"`, "--db.url", "NLPSWARM_DB_URL", "--timeout", "--configfile"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, b.String())
		}
	}
}
