// Package control owns unicorn's control plane: the JSON API and the
// dashboard on the control address, the switches that turn scenarios on
// and off at run time (for a while, for a group of devices), the event hub
// that carries every non-allow decision to the dashboard, the SSE stream
// and the JSON Lines event log, the Prometheus metrics, and the state of
// rule reloads. Nothing here is on a request's path: the engine decides,
// and control only reads its state or swaps it atomically.
package control
