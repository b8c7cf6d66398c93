/** OHIF's configuration as the gatekeeper serves it at /viewer/app-config.js (app/api/viewer.py).
 *
 * One data source: this service's own DICOMweb on the origin the page came from (QIDO-RS, WADO-RS and
 * STOW-RS under /dicomweb), so no request leaves that origin and a contour stored from the viewer goes to
 * the radiologist's case (a radiologist's STOW of a SEG). The browser session's cookie authenticates the
 * requests; nothing here names a host, a CDN or a token.
 */
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
