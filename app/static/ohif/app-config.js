/** OHIF's configuration as the gatekeeper serves it at /viewer/app-config.js (app/api/viewer.py).
 *
 * One data source: this service's own DICOMweb on the origin the page came from (QIDO-RS, WADO-RS and
 * STOW-RS under /dicomweb), so no request leaves that origin and a contour stored from the viewer goes to
 * the radiologist's case (a radiologist's STOW of a SEG). The browser session's cookie authenticates the
 * requests; nothing here names a host, a CDN or a token.
 */
/* A browser session (app/api/deps.py) must send its CSRF token with every request that changes state: OHIF's
 * STOW of a SEG goes through dicomweb-client's XMLHttpRequest, so same-origin unsafe requests get the token that
 * GET /ui/session gives this origin's scripts (another site's script cannot read it). With a bearer token
 * instead of a session, /ui/session answers a redirect to the login page and nothing is added. */
(function addSessionCsrf() {
  var token = null;
  var ready = fetch('/ui/session', { credentials: 'same-origin', redirect: 'manual' })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (j) { if (j) { token = j.csrf_token; } })
    .catch(function () {});
  var open = XMLHttpRequest.prototype.open;
  var send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    var target = new URL(url, window.location.href);
    this._gkCsrf = !/^(GET|HEAD|OPTIONS)$/i.test(method) && target.origin === window.location.origin;
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    var xhr = this, args = arguments;
    if (!xhr._gkCsrf) { return send.apply(xhr, args); }
    ready.then(function () {
      if (token) { xhr.setRequestHeader('X-CSRF-Token', token); }
      send.apply(xhr, args);
    });
  };
})();

window.config = {
  name: 'gatekeeper',
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'gatekeeper',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'gatekeeper',
      configuration: {
        friendlyName: 'gatekeeper DICOMweb',
        name: 'gatekeeper',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        supportsStow: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('DICOMweb request failed', error.status);
  },
};
