package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// meterName is the instrumentation scope of eddy's metrics.
const meterName = "github.com/eddy-cluster/eddy"

// metricsSetup builds the MeterProvider the --metrics flag selects. Off by
// default (a no-op meter). The returned shutdown flushes and stops it.
func metricsSetup(ctx context.Context, cfg *Config, log *slog.Logger) (metric.Meter, func(context.Context) error, error) {
	nop := func(context.Context) error { return nil }
	switch cfg.Metrics {
	case "", "off", "none":
		return noop.NewMeterProvider().Meter(meterName), nop, nil
	case "stdout":
		exp, err := stdoutmetric.New(stdoutmetric.WithEncoder(json.NewEncoder(os.Stdout)))
		if err != nil {
			return nil, nop, fmt.Errorf("metrics stdout exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
			sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.MetricsInterval))))
		log.Info("metrics: exporting to stdout", "interval", cfg.MetricsInterval)
		return mp.Meter(meterName), mp.Shutdown, nil
	case "prometheus":
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return nil, nop, fmt.Errorf("metrics prometheus exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
		l, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			_ = mp.Shutdown(ctx)
			return nil, nop, fmt.Errorf("metrics: listen on %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
		log.Info("metrics: serving Prometheus", "url", "http://"+l.Addr().String()+"/metrics")
		return mp.Meter(meterName), func(ctx context.Context) error {
			return errors.Join(srv.Shutdown(ctx), mp.Shutdown(ctx))
		}, nil
	}
	return nil, nop, fmt.Errorf("--metrics %q: want stdout or prometheus", cfg.Metrics)
}
