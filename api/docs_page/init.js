// The API reference: Swagger UI on this deployment's own OpenAPI document (relative, so a proxy's
// path prefix is kept). "Authorize" takes an API key as the Bearer token.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
    validatorUrl: null, // no badge from swagger.io: the page loads nothing from elsewhere
  });
};
