# frozen_string_literal: true

# The HMAC check of the shopify_app gem, as its controller concerns have it
# (lib/shopify_app/controller_concerns/webhook_verification.rb and payload_verification.rb,
# Shopify/shopify_app, MIT licence): the gem cannot be installed here (no RubyGems registry),
# so its two concerns are copied unchanged; rails_shim.rb gives them the Rails pieces they use.
module ShopifyApp
  module PayloadVerification
    extend ActiveSupport::Concern

    def hmac_valid?(data)
      secrets = [ShopifyApp.configuration.secret, ShopifyApp.configuration.old_secret].reject(&:blank?)

      secrets.any? do |secret|
        digest = OpenSSL::Digest.new("sha256")

        ActiveSupport::SecurityUtils.secure_compare(
          shopify_hmac,
          Base64.strict_encode64(OpenSSL::HMAC.digest(digest, secret, data)),
        )
      end
    end

    def shopify_hmac
      request.headers["HTTP_X_SHOPIFY_HMAC_SHA256"]
    end
  end

  module WebhookVerification
    extend ActiveSupport::Concern
    include ShopifyApp::PayloadVerification

    included do
      skip_before_action :verify_authenticity_token, raise: false
      before_action :verify_request
    end

    private

    def verify_request
      data = request.raw_post
      return head(:unauthorized) unless hmac_valid?(data)
    end

    def shop_domain
      request.headers["HTTP_X_SHOPIFY_SHOP_DOMAIN"]
    end
  end
end
