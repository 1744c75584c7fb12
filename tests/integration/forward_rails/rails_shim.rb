# frozen_string_literal: true

# The few pieces of Rails that docs/forwarding.md's WebhooksController and shopify_app's
# concerns use, in plain Ruby (no Rails here: no RubyGems registry): a concern's `included`
# block, `before_action` halting on `head`, `request.headers` with Rails' header names,
# `request.raw_post`, secure_compare as ActiveSupport has it, and the app's model and job
# (a unique index on webhook_id; a job that records what it got).
require "json"
require "openssl"

class Object
  def blank? = respond_to?(:empty?) ? empty? : !self
end

class NilClass
  def blank? = true
end

module Base64
  def self.strict_encode64(bin) = [bin].pack("m0")
end

module ActiveSupport
  module Concern
    def included(base = nil, &block)
      return @included_block = block if block

      super
      base.class_eval(&@included_block) if @included_block
    end
  end

  module SecurityUtils
    # ActiveSupport's: equal sizes, then a constant-time comparison.
    def self.secure_compare(a, b)
      a.bytesize == b.bytesize && OpenSSL.fixed_length_secure_compare(a, b)
    end
  end
end

module ActiveRecord
  class RecordNotUnique < StandardError; end
end

module ShopifyApp
  Configuration = Struct.new(:secret, :old_secret)

  def self.configuration = @configuration ||= Configuration.new(ENV.fetch("SHOPIFY_API_SECRET"), nil)
end

# request.headers as Rails answers it: "X-Shopify-Topic" and "HTTP_X_SHOPIFY_TOPIC" alike.
class Headers
  def initialize(raw) = @raw = raw.to_h { |k, v| [k.downcase.tr("_", "-"), v] }

  def [](name) = @raw[name.sub(/\AHTTP_/, "").downcase.tr("_", "-")]
end

Request = Struct.new(:headers, :raw_post)

class ApplicationController
  def self.before_actions = @before_actions ||= []

  def self.before_action(name) = before_actions << name

  def self.skip_before_action(name, raise: true)
    before_actions.delete(name) or (raise && raise(ArgumentError, "no before_action #{name}"))
  end

  attr_reader :request, :status

  def initialize(request) = @request = request

  def head(status) = @status = { ok: 200, unauthorized: 401 }.fetch(status)

  def process(action)
    self.class.before_actions.each do |name|
      send(name)
      return status if status
    end
    send(action)
    status || 204
  end
end

class ProcessedWebhook
  @ids = {}
  class << self
    def create!(webhook_id:)
      raise ActiveRecord::RecordNotUnique, "webhook_id" if @ids.key?(webhook_id)

      @ids[webhook_id] = true
    end
  end
end

class HandleWebhookJob
  def self.perform_later(**args)
    File.open(ENV.fetch("SHOPIPE_TEST_RECORD"), "a") do |f|
      line = { kind: "handled", webhookId: args[:webhook_id], topic: args[:topic], shop: args[:shop] }
      f.write(JSON.generate({ **line, bytes: args[:body].bytesize }) + "\n") # one write: whole lines
    end
  end
end
