package apiserver

import (
	"errors"
	"fmt"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/model"

	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// monitorRefresh is how often the monitoring pages redraw themselves
// (Prometheus scrapes every 10 s; the step is 30 s).
const monitorRefresh = 30

// monitorView draws specs and lists the alerts keep lets through.
func (s *Server) monitorView(c *gin.Context, title, nav, model string, specs []chartSpec, keep func(model.LabelSet) bool) *view {
	end := time.Now().Truncate(monitorStep)
	data := s.fetchMonitor(c.Request.Context(), specs, end, keep)
	charts := make([]lineChart, 0, len(specs))
	for _, sp := range specs {
		charts = append(charts, buildLineChart(sp, data.Series[sp.ID], end))
	}
	return &view{Title: title, Nav: nav, Refresh: monitorRefresh, Data: map[string]any{
		"Model": model, "Charts": charts, "Alerts": data.Alerts, "Problem": data.Problem,
		"From": end.Add(-monitorWindow), "To": end,
	}}
}

func (s *Server) modelMonitorPage(c *gin.Context) {
	name := c.Param("name")
	var one int
	err := s.db.QueryRow(c.Request.Context(), `SELECT 1 FROM models WHERE name = $1`, name).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		err = fmt.Errorf("model %s: %w", name, modelmgr.ErrNotFound)
	}
	if err != nil {
		s.show(c, "monitor.html", nil, err)
		return
	}
	keep := func(l model.LabelSet) bool { return string(l["model"]) == name }
	s.show(c, "monitor.html", s.monitorView(c, "Monitoring "+name, "models", name, modelQueries(name), keep), nil)
}

func (s *Server) clusterPage(c *gin.Context) {
	s.show(c, "monitor.html", s.monitorView(c, "Cluster", "cluster", "", clusterQueries(), nil), nil)
}
