package client_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
)

// shared is the gateway of the package's examples, started once by
// TestMain (an example has no *testing.T to start one with).
var shared *gatewaytest.Env

func TestMain(m *testing.M) {
	tb := &mainTB{}
	code := func() (code int) {
		defer func() {
			if r := recover(); r != nil {
				if s, ok := r.(skipped); ok {
					fmt.Println("client tests skipped:", string(s))
					code = 0
					return
				}
				panic(r)
			}
		}()
		shared = gatewaytest.Start(tb, gatewaytest.Options{})
		return m.Run()
	}()
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
	os.Exit(code)
}

// mainTB is the testing.TB that TestMain lacks, with the methods
// gatewaytest and the pgtest it uses call (the embedded nil interface
// panics on any other).
type mainTB struct {
	testing.TB
	cleanups []func()
}

type skipped string

func (*mainTB) Helper()                   {}
func (t *mainTB) Cleanup(f func())        { t.cleanups = append(t.cleanups, f) }
func (*mainTB) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (*mainTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (*mainTB) Skipf(f string, a ...any)  { panic(skipped(fmt.Sprintf(f, a...))) }
func (*mainTB) Logf(f string, a ...any)   { fmt.Printf(f+"\n", a...) }
func (*mainTB) Name() string              { return "TestMain" }
