import Foundation
import Prometheus

/// The service's Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
///
/// - `opacity_http_requests_total{status}`: answered requests by status code.
/// - `opacity_http_request_duration_seconds`: latency histogram of every answered request.
/// - `opacity_queue_depth_images`: images waiting for the model.
/// - `opacity_batch_size_images`: histogram of images per forward pass.
/// - `opacity_images_total`: images run through the model (`rate()` of it is images/s).
/// - `opacity_images_per_second`: images per second over the last 10 s, measured here.
final class ServeMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let queueDepth: Gauge
    private let latency: DurationHistogram
    private let batchSize: ValueHistogram
    private let images: Counter
    private let rate: Gauge
    private let lock = NSLock()
    private var statusCounters: [Int: Counter] = [:]
    private var recent: [(time: UInt64, images: Int)] = []

    init() {
        queueDepth = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "opacity", metricName: "queue_depth", unitName: "images", helpText: "Images waiting for the model."))
        latency = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "opacity", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                                             helpText: "Time from a request's arrival to its answer."),
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60].map { Duration.milliseconds(Int64($0 * 1000)) })
        batchSize = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(namespace: "opacity", metricName: "batch_size", unitName: "images",
                                             helpText: "Images per forward pass."),
            buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64])
        images = registry.makeCounter(descriptor: MetricNameDescriptor(
            namespace: "opacity", metricName: "images", unitName: "total", helpText: "Images run through the model."))
        rate = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "opacity", metricName: "images_per_second", unitName: "", helpText: "Images per second over the last 10 seconds."))
    }

    /// Counts an answered request.
    func recordRequest(status: Int, duration: Duration) {
        let counter: Counter = lock.withLock {
            if let c = statusCounters[status] { return c }
            let c = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "opacity", subsystem: "http", metricName: "requests", unitName: "total",
                                                 helpText: "Answered HTTP requests by status code."),
                labels: [("status", "\(status)")])
            statusCounters[status] = c
            return c
        }
        counter.increment()
        latency.record(duration)
    }

    /// Counts a forward pass of `images` images.
    func recordBatch(images n: Int) {
        batchSize.record(Double(n))
        images.increment(by: Int64(n))
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            recent.append((now, n))
            recent.removeAll { now - $0.time > 10_000_000_000 }
        }
        updateRate()
    }

    private func updateRate() {
        let now = DispatchTime.now().uptimeNanoseconds
        let total: Int = lock.withLock {
            recent.removeAll { now - $0.time > 10_000_000_000 }
            return recent.reduce(0) { $0 + $1.images }
        }
        rate.set(Double(total) / 10)
    }

    /// The exposition text.
    func render() -> String {
        updateRate()
        return registry.emitToString()
    }
}
