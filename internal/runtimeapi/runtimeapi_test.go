package runtimeapi

import "testing"

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		status int
		want   Outcome
	}{
		{200, Answered}, {400, Answered}, {404, Answered}, {413, Answered}, {422, Answered}, {500, Answered},
		{429, Busy}, {503, NotReady}, {401, Refused}, {502, Faulty}, {504, Faulty},
	} {
		if got := Judge(c.status); got != c.want {
			t.Errorf("Judge(%d) = %d, want %d", c.status, got, c.want)
		}
	}
}
