# frozen_string_literal: true

# Serves docs/forwarding.md's WebhooksController (the file named first, taken from the docs by
# the test) with shopify_app's HMAC check (shopify_app.rb) on rails_shim.rb: each POST is
# dispatched to its `receive` action as Rails would, and its status is the answer.
#   ruby server.rb <controller file> <record file> <slow topic> <slow seconds>
# The first delivery of each webhook of <slow topic> is answered <slow seconds> late, after the
# action ran: the answer a worker times out on, so it delivers the webhook again.
# Listens on a free loopback port and prints it as the first line of stdout.
require "socket"
require_relative "rails_shim"
require_relative "shopify_app"

controller, record, slow_topic, slow_seconds = ARGV
load controller
slowed = {}
lock = Mutex.new

def read_request(client)
  head = []
  while (line = client.gets("\r\n")) && line != "\r\n"
    head << line.chomp("\r\n")
  end
  headers = head.drop(1).to_h { |h| h.split(": ", 2) }
  length = headers.find { |k, _| k.casecmp?("content-length") }&.last.to_i || 0
  [headers, length.positive? ? client.read(length) : ""]
end

server = TCPServer.new("127.0.0.1", 0)
$stdout.puts(server.addr[1])
$stdout.flush
trap("TERM") { exit(0) }
loop do
  Thread.new(server.accept) do |client|
    headers, body = read_request(client)
    request = Request.new(Headers.new(headers), body)
    status = lock.synchronize do
      s = WebhooksController.new(request).process(:receive)
      File.open(record, "a") do |f|
        f.write(JSON.generate({
          kind: "request", status: s, webhookId: request.headers["X-Shopify-Webhook-Id"],
          topic: request.headers["X-Shopify-Topic"],
          attempt: request.headers["X-Shopipe-Attempt"],
        }) + "\n") # one write: the test reads while the app writes, whole lines only
      end
      s
    end
    wid = request.headers["X-Shopify-Webhook-Id"]
    if request.headers["X-Shopify-Topic"] == slow_topic && lock.synchronize { !slowed[wid] && (slowed[wid] = true) }
      sleep(slow_seconds.to_f) # the late answer the test needs, not a synchronisation
    end
    client.write("HTTP/1.1 #{status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
  ensure
    client.close
  end
end
