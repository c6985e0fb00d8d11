// Package api holds the JSON types of eddy's control API and a client for it, over the local unix
// socket or the cluster's TCP address, carrying the cluster token.
package api
