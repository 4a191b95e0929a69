// The Signal-protocol half of the client lives in the client library (clients/js/src/signal.mjs).
export * from '../../../clients/js/src/signal.mjs';
